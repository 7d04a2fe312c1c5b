"""``/datasets``: upload a file (streamed to disk, stored once by its sha256), list, read and delete uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from api import repository
from api.deps import SessionDep, SettingsDep
from api.errors import ApiError
from api.openapi import errors
from api.schemas import DatasetPublic
from api.uploads import delete_upload, list_uploads, read_upload, store_upload, upload_format

router = APIRouter(prefix="/datasets", tags=["datasets"])

FormatQuery = Annotated[str | None, Query(alias="format", max_length=16,
                                          description="csv | npz | parquet | zip, for an octet-stream "
                                                      "body")]
STREAMED = ("POST", "/datasets")  # the body limit middleware lets this through: the handler streams it
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    kind: {"schema": {"type": "string", "format": "binary"}}
    for kind in ("text/csv", "application/vnd.apache.parquet", "application/zip", "application/octet-stream")}}}


@router.post("", status_code=201, response_model=DatasetPublic, openapi_extra=UPLOAD_BODY,
             responses=errors(413, 415) | {200: {"model": DatasetPublic,
                                                 "description": "these bytes were stored already: that upload"}})
async def create_dataset(request: Request, response: Response, settings: SettingsDep,
                         fmt: FormatQuery = None) -> DatasetPublic:
    """Store the body (a CSV, a Parquet table, an npz of X, y and optionally fold, or a zip of one folder of
    PNG or JPEG images per class) and answer what it holds.

    The body streams to disk while its sha256 is computed; the same bytes always answer the same
    id, 201 the first time and 200 after. A body over REGTUNE_MAX_UPLOAD_BYTES answers 413, one
    that does not parse 422 naming the line, column, array or zip member; neither leaves anything on disk.
    A zip's members must unpack inside it (no absolute path, no '..', no link), at most
    REGTUNE_MAX_UPLOAD_FILES of them (422) and REGTUNE_MAX_UNPACKED_BYTES unpacked (413).
    """
    fmt = upload_format(request.headers.get("content-type", ""), fmt)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > settings.max_upload_bytes):
        raise ApiError(413, "body_too_large", f"a dataset must be at most {settings.max_upload_bytes} bytes "
                       f"(REGTUNE_MAX_UPLOAD_BYTES), but Content-Length is {length[:40]}")
    try:
        summary, stored = await store_upload(request.stream(), settings=settings, fmt=fmt)
    except ClientDisconnect:  # nobody reads the answer; it keeps a left upload out of the error log
        raise ApiError(400, "upload_incomplete", "the client left before the body ended; nothing was "
                       "stored") from None
    response.status_code = 201 if stored else 200
    response.headers["Location"] = f"/datasets/{summary['id']}"
    return DatasetPublic.model_validate(summary)


@router.get("", response_model=list[DatasetPublic], responses=errors())
def list_datasets(settings: SettingsDep) -> list[DatasetPublic]:
    """Every uploaded dataset, by id."""
    return [DatasetPublic.model_validate(s) for s in list_uploads(settings=settings)]


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=errors(404))
def read_dataset(settings: SettingsDep, dataset_id: str) -> DatasetPublic:
    """One upload's summary."""
    return DatasetPublic.model_validate(read_upload(settings=settings, dataset_id=dataset_id))


@router.delete("/{dataset_id}", status_code=204, response_class=Response, responses=errors(404, 409))
async def delete_dataset(session: SessionDep, settings: SettingsDep, dataset_id: str) -> Response:
    """Delete an upload; 409 while a queued or running job names it (finished jobs keep their reports)."""
    await run_in_threadpool(read_upload, settings=settings, dataset_id=dataset_id)
    users = await run_in_threadpool(repository.jobs_using_dataset, session=session, dataset_id=dataset_id)
    if users:
        raise ApiError(409, "dataset_in_use", f"dataset {dataset_id} is used by {len(users)} queued or running "
                       f"job(s): {', '.join(users[:10])}; cancel them or wait for them to finish")
    await run_in_threadpool(delete_upload, settings=settings, dataset_id=dataset_id)
    return Response(status_code=204)
