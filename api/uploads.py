"""Uploaded datasets on disk: streamed in, content-addressed by sha256, summarized, listed, deleted.

A file lives at ``REGTUNE_DATA_DIR/uploads/<sha256>.<format>`` beside its summary ``<sha256>.json``.
It is written to a hidden temporary file in the same folder while its hash is computed, summarized,
and only then linked into place: ``os.link`` fails when the name exists, so of many concurrent
uploads of one file exactly one stores it and the rest answer the stored one. A refused upload
(too big, unparseable, the client gone) removes its temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

from anyio import to_thread

from api.dataset_summary import summarize
from api.errors import ApiError
from api.settings import Settings
from tuner import JobSpec
from tuner.errors import Issue
from tuner.train import UPLOAD_FORMATS, UPLOADS

__all__ = ["check_upload", "delete_upload", "list_uploads", "read_upload", "store_upload", "upload_format"]

MEDIA_TYPES = {"text/csv": "csv", "application/vnd.apache.parquet": "parquet", "application/zip": "zip"}
_ID = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 16


def uploads_dir(settings: Settings) -> Path:
    return (settings.data_dir / UPLOADS).resolve()


def upload_format(content_type: str, fmt: str | None) -> str:
    """The format a request body holds, from its media type or (for octet-stream) ``?format=``.

    Raises:
        ApiError: 415 for another media type; 422 for a format this service cannot read.
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind in MEDIA_TYPES and fmt is None:
        fmt = MEDIA_TYPES[kind]
    elif kind != "application/octet-stream" and kind not in MEDIA_TYPES:
        shown = repr(kind[:100]) if kind else "none"
        raise ApiError(415, "unsupported_media_type", f"the Content-Type of a dataset must be one of "
                       f"{', '.join([*MEDIA_TYPES, 'application/octet-stream'])}, but got {shown}")
    if fmt not in UPLOAD_FORMATS:
        raise ApiError(422, "invalid_request", f"the format must be one of {', '.join(UPLOAD_FORMATS)}, "
                       f"but got {fmt!r}", [Issue("query.format", f"must be one of {', '.join(UPLOAD_FORMATS)}"
                                                  " (octet-stream bodies name it)", fmt)])
    return fmt


def _existing(folder: Path, digest: str) -> Path | None:
    return next((p for f in UPLOAD_FORMATS if (p := folder / f"{digest}.{f}").is_file()), None)


def _place(tmp: Path, folder: Path, digest: str, fmt: str, summary: dict[str, Any]) -> bool:
    """Link the summary and the file into place; False when another upload stored these bytes first."""
    if _existing(folder, digest) is not None:
        return False
    meta = folder / f".{digest}.{os.getpid()}.{id(summary)}.json"
    meta.write_text(json.dumps(summary), encoding="utf-8")
    os.replace(meta, folder / f"{digest}.json")  # the same bytes give the same summary: last writer wins
    try:
        os.link(tmp, folder / f"{digest}.{fmt}")
    except FileExistsError:
        return False
    return True


async def store_upload(chunks: AsyncIterator[bytes], *, settings: Settings, fmt: str) -> tuple[dict[str, Any], bool]:
    """Stream ``chunks`` to disk, hash them, summarize the file and store it once.

    Returns:
        The summary, and whether this call stored the file (False: the same bytes were there already).

    Raises:
        ApiError: 413 past ``REGTUNE_MAX_UPLOAD_BYTES``; 422 ``invalid_dataset`` naming where it fails to parse.
    """
    folder = uploads_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=f".{fmt}")
    tmp = Path(name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise ApiError(413, "body_too_large", f"a dataset must be at most {settings.max_upload_bytes} "
                                   "bytes (REGTUNE_MAX_UPLOAD_BYTES); more arrived")
                digest.update(chunk)
                fh.write(chunk)
        sha = digest.hexdigest()
        if _existing(folder, sha) is not None:
            return read_upload(settings=settings, dataset_id=sha), False
        table = await to_thread.run_sync(partial(summarize, tmp, fmt, max_files=settings.max_upload_files,
                                                 max_unpacked_bytes=settings.max_unpacked_bytes))
        summary = {"id": sha, "format": fmt, "bytes": size, "sha256": sha, **table}
        stored = await to_thread.run_sync(_place, tmp, folder, sha, fmt, summary)
        return (summary if stored else read_upload(settings=settings, dataset_id=sha)), stored
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _checked_id(dataset_id: str) -> str:
    if not _ID.match(dataset_id):
        shown = dataset_id if len(dataset_id) <= 80 else dataset_id[:80] + "..."
        raise ApiError(404, "dataset_not_found", f"no dataset has id {shown!r} (an id is 64 hex digits)")
    return dataset_id


def read_upload(*, settings: Settings, dataset_id: str) -> dict[str, Any]:
    """The summary of one stored upload.

    Raises:
        ApiError: 404 ``dataset_not_found``.
    """
    folder = uploads_dir(settings)
    _checked_id(dataset_id)
    try:
        if _existing(folder, dataset_id) is None:
            raise FileNotFoundError(dataset_id)
        summary: dict[str, Any] = json.loads((folder / f"{dataset_id}.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ApiError(404, "dataset_not_found", f"no dataset has id {dataset_id!r}") from None
    return summary


def list_uploads(*, settings: Settings) -> list[dict[str, Any]]:
    """Every stored upload's summary, by id."""
    folder = uploads_dir(settings)
    if not folder.is_dir():
        return []
    ids = sorted({p.stem for p in folder.iterdir() if _ID.match(p.stem) and p.suffix[1:] in UPLOAD_FORMATS})
    out = []
    for dataset_id in ids:
        with contextlib.suppress(ApiError):  # deleted meanwhile
            out.append(read_upload(settings=settings, dataset_id=dataset_id))
    return out


def delete_upload(*, settings: Settings, dataset_id: str) -> None:
    """Remove a stored upload (the caller has checked no queued or running job uses it)."""
    folder = uploads_dir(settings)
    path = _existing(folder, _checked_id(dataset_id))
    if path is None:
        raise ApiError(404, "dataset_not_found", f"no dataset has id {dataset_id!r}")
    path.unlink(missing_ok=True)
    (folder / f"{dataset_id}.json").unlink(missing_ok=True)


def check_upload(spec: JobSpec, settings: Settings) -> None:
    """Refuse at submit a spec that names an upload this service does not hold, or reads it as another format.

    Raises:
        ApiError: 422 ``invalid_spec`` naming ``dataset.id`` (unknown), ``dataset.target`` (a table needs
            one; an npz or a zip of images has none), ``dataset.max_levels`` (for a table only) or
            ``dataset.size``/``channels`` (for a zip of images only).
    """
    data = spec.dataset
    if data.source != "upload":
        return
    found = _existing(uploads_dir(settings), data.id or "")
    if found is None:
        issue = Issue("dataset.id", f"no uploaded dataset has id {data.id!r}; POST /datasets answers the id of a "
                      "file it stored (GET /datasets lists them)", data.id)
    elif found.suffix != ".zip" and (data.size is not None or data.channels is not None):
        key = "size" if data.size is not None else "channels"
        issue = Issue(f"dataset.{key}", f"applies to an uploaded zip of images, but upload {data.id} is "
                      f"{found.suffix[1:]}", data.size or data.channels)
    elif found.suffix == ".zip" and (data.target or data.split.column or data.max_levels):
        key = "target" if data.target else "split.column" if data.split.column else "max_levels"
        issue = Issue(f"dataset.{key}", f"applies to an uploaded table (CSV or Parquet), but upload {data.id} is "
                      "a zip of images (each image's class is its folder's name)",
                      data.target or data.split.column or data.max_levels)
    elif found.suffix not in (".npz", ".zip") and not data.target:
        issue = Issue("dataset.target", f"upload {data.id} is a table ({found.suffix[1:]}): name its target "
                      "column in 'target'")
    elif found.suffix == ".npz" and (data.target or data.split.column or data.max_levels):
        key = "target" if data.target else "split.column" if data.split.column else "max_levels"
        issue = Issue(f"dataset.{key}", f"applies to an uploaded table (CSV or Parquet), but upload {data.id} is "
                      "npz (arrays X and y)", data.target or data.split.column or data.max_levels)
    else:
        return
    raise ApiError(422, "invalid_spec", f"the job spec breaks 1 rule(s): {issue.field}", [issue])
