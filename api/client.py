"""A small HTTP client of the service, for ``regtune submit`` and ``regtune status``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import yaml

from tuner import Report
from tuner.knobs import fmt_params

__all__ = ["DEFAULT_SERVER", "Client", "ClientError", "describe", "progress_line", "summary", "with_upload"]

DEFAULT_SERVER = "http://127.0.0.1:8000"
UPLOAD_SUFFIXES = ("csv", "npz", "parquet", "zip")


class ClientError(Exception):
    """The service answered an error (its message and issues, one per line), or could not be reached."""


class Client:
    """Talks to ``server``, with ``REGTUNE_API_TOKEN`` as the bearer token when it is set."""

    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = (server or os.environ.get("REGTUNE_SERVER") or DEFAULT_SERVER).rstrip("/")
        token = token if token is not None else os.environ.get("REGTUNE_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.server}: {exc}") from None
        if response.is_success:
            return response.json()
        raise ClientError(describe(response))

    def upload(self, data: Path) -> dict[str, Any]:
        """Send a data file to ``POST /datasets`` (streamed from disk); its summary, with the ``id`` a spec names."""
        fmt = data.suffix.lower().lstrip(".")
        if fmt not in UPLOAD_SUFFIXES:
            raise ClientError(f"cannot tell the format of {str(data)!r}: its name must end in "
                              f"{', '.join('.' + s for s in UPLOAD_SUFFIXES)}")
        try:
            with data.open("rb") as fh:
                summary: dict[str, Any] = self._call("POST", "/datasets", content=_chunks(fh),
                                                     params={"format": fmt},
                                                     headers={"content-type": "application/octet-stream"})
        except OSError as exc:
            raise ClientError(f"cannot read data file {str(data)!r}: {exc.strerror}") from None
        return summary

    def submit(self, spec: Path, idempotency_key: str | None = None, data: Path | None = None) -> dict[str, Any]:
        """Send a job spec; with ``data``, upload that file first and point the spec's dataset at it."""
        try:
            body = spec.read_bytes()
        except OSError as exc:
            raise ClientError(f"cannot read spec file {str(spec)!r}: {exc.strerror}") from None
        kind = "application/json" if spec.suffix == ".json" else "application/yaml"
        if data is not None:
            body, kind = json.dumps(with_upload(body, self.upload(data)["id"])).encode(), "application/json"
        headers = {"content-type": kind} | ({"Idempotency-Key": idempotency_key} if idempotency_key else {})
        job: dict[str, Any] = self._call("POST", "/jobs", content=body, headers=headers)
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/jobs/{job_id}")
        return job

    def report(self, job_id: str) -> Report:
        return Report.model_validate(self._call("GET", f"/jobs/{job_id}/report"))


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(1 << 16):
        yield chunk


def with_upload(spec: bytes, dataset_id: str) -> dict[str, Any]:
    """The spec (YAML or JSON) with its dataset pointed at upload ``dataset_id``.

    What says how to read the data (``target``, ``task``, ``split``, ``standardize``, ``max_levels``, an image
    zip's ``size`` and ``channels``) is kept;
    where it came from (``source``, ``path``, ``name``) is replaced.
    """
    try:
        doc = yaml.safe_load(spec)
    except yaml.YAMLError as exc:
        raise ClientError(f"the spec is not valid YAML or JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ClientError("the spec must be a mapping of fields")
    dataset = doc.get("dataset")
    dataset = dataset if isinstance(dataset, dict) else {}
    kept = {k: v for k, v in dataset.items()
            if k in ("target", "task", "split", "standardize", "max_levels", "size", "channels")}
    return doc | {"dataset": {"source": "upload", "id": dataset_id, **kept}}


def describe(response: httpx.Response) -> str:
    """An error answer as text: the message, then each issue as ``field: rule``."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:300]}"
    lines = [f"HTTP {response.status_code} {error.get('code')}: {error.get('message')}"]
    lines += [f"  {i.get('field') or '(body)'}: {i.get('message')}" for i in error.get("issues", [])]
    return "\n".join(lines)


def progress_line(job: dict[str, Any]) -> str:
    """``running  baseline 1/1 trials  l2 3/15 trials (1 pruned)  best 0.1234 (l2 #2)``."""
    stages = "  ".join(f"{s['name']} {s.get('count') or str(s['done']) + '/' + str(s['total'])}"
                       for s in job.get("stages", []))
    best = job.get("best")
    shown = f"  best {best['value']:.4g} ({best['stage']} #{best['trial']})" if best and best["value"] is not None \
        else ""
    return f"{job['status']:<9}  {stages}{shown}"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def summary(job: dict[str, Any], report: Report | None) -> str:
    """What a finished job came to: its status, and for a success the diagnosis and the choice."""
    lines = [f"job {job['id']} ({job['name']}): {job['status']}"]
    if job.get("error"):
        lines.append(f"  {job['error']}")
    if report is not None:
        lines.append(f"  {report.diagnosis}")
        for label, row in (("baseline", report.baseline), ("chosen", report.chosen)):
            metric, value = row.test_metric
            tested = f", {metric} {_fmt(value)}" if value is not None else ""
            lines.append(f"  {label:<8} val loss {_fmt(row.val_loss)}, gap {_fmt(row.gap)}{tested}: "
                         f"{fmt_params(row.params)}")
    return "\n".join(lines)
