"""``/jobs``: submit a job spec, list jobs, read one with its stage progress, cancel one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import repository
from api.deps import DatabaseDep, JobViewsDep, SessionDep, SettingsDep
from api.openapi import SPEC_BODY, errors
from api.schemas import JobDetail, JobPublic, JobsPublic
from api.spec_body import check_limits, parse_body
from api.tables import JobStatus
from api.uploads import check_upload

router = APIRouter(prefix="/jobs", tags=["jobs"])

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="repeat a POST with the same key to get the same job back (printable ASCII, no spaces)")]


async def read_body(request: Request) -> tuple[bytes, str]:
    """The raw body and its content type (the spec may come as JSON or YAML)."""
    return await request.body(), request.headers.get("content-type", "")


BodyDep = Annotated[tuple[bytes, str], Depends(read_body)]


@router.post("", status_code=202, response_model=JobPublic, openapi_extra=SPEC_BODY,
             responses=errors(413, 415, 422) | {202: {"description": "queued (or, for a repeated "
                                                 "Idempotency-Key, the job that key made)",
                                                 "headers": {"Location": {"schema": {"type": "string"},
                                                                          "description": "/jobs/<id>"}}}})
def create_job(session: SessionDep, settings: SettingsDep, body: BodyDep, response: Response,
               idempotency_key: IdempotencyKey = None) -> JobPublic:
    """Validate a job spec (JSON, or YAML with ``Content-Type: application/yaml``) and queue it."""
    spec = parse_body(*body)
    check_limits(spec, settings)
    check_upload(spec, settings)
    row, _ = repository.create_job(session=session, spec=spec, idempotency_key=idempotency_key)
    response.headers["Location"] = f"/jobs/{row.id}"
    return JobPublic.of(row)


@router.get("", response_model=JobsPublic, responses=errors(422))
def list_jobs(session: SessionDep, status: JobStatus | None = None,
              limit: Annotated[int, Query(ge=1, le=100)] = 20,
              offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0) -> JobsPublic:
    """Jobs, newest first, optionally only those in one status; ``limit``/``offset`` page through them."""
    rows, total = repository.list_jobs(session=session, status=status, limit=limit, offset=offset)
    return JobsPublic(items=[JobPublic.of(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobDetail, responses=errors(404))
async def read_job(db: DatabaseDep, views: JobViewsDep, job_id: str) -> Response:
    """A job: status, attempts, per-stage progress (trials done of the budget) and the best trial so far.

    The answer may be up to a second old: one read serves every client polling the job.
    """
    body = views.fresh(job_id) or await run_in_threadpool(views.load, db, job_id)
    return Response(body, media_type="application/json")


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic, responses=errors(404, 409))
def cancel_job(session: SessionDep, views: JobViewsDep, job_id: str) -> JobPublic:
    """Cancel: a queued job never starts; a running one stops at its next epoch boundary (its finished
    trials stay). A job that has already finished answers 409."""
    row = repository.cancel_job(session=session, job_id=job_id)
    views.forget(job_id)
    return JobPublic.of(row)
