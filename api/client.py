"""A small HTTP client of the service, for ``regtune submit`` and ``regtune status``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from tuner import Report
from tuner.knobs import fmt_params

__all__ = ["DEFAULT_SERVER", "Client", "ClientError", "describe", "progress_line", "summary"]

DEFAULT_SERVER = "http://127.0.0.1:8000"


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

    def submit(self, spec: Path, idempotency_key: str | None = None) -> dict[str, Any]:
        try:
            body = spec.read_bytes()
        except OSError as exc:
            raise ClientError(f"cannot read spec file {str(spec)!r}: {exc.strerror}") from None
        kind = "application/json" if spec.suffix == ".json" else "application/yaml"
        headers = {"content-type": kind} | ({"Idempotency-Key": idempotency_key} if idempotency_key else {})
        job: dict[str, Any] = self._call("POST", "/jobs", content=body, headers=headers)
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/jobs/{job_id}")
        return job

    def report(self, job_id: str) -> Report:
        return Report.model_validate(self._call("GET", f"/jobs/{job_id}/report"))


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
