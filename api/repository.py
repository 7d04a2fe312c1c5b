"""The jobs table as the API uses it: create (idempotently), read, list, cancel.

The runners' side of the table (claims, leases, results) is in ``api.worker.queue``.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.messages import already_finished
from api.spec_body import spec_hash
from api.tables import FINISHED, JobModelRow, JobRow, JobStatus, utcnow
from tuner import JobSpec, Report
from tuner.errors import Issue

__all__ = ["cancel_job", "create_job", "get_job", "get_job_model", "jobs_using_dataset", "list_jobs", "new_job_id",
           "stored_report"]

IDEMPOTENCY_FIELD = "header.Idempotency-Key"
JOB_ID = re.compile(r"[0-9a-f]{12}")


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def _replay(row: JobRow, digest: str, key: str) -> JobRow:
    """The job an Idempotency-Key made before, if the spec is the same one."""
    if row.spec_hash != digest:
        issue = Issue(IDEMPOTENCY_FIELD, f"was first used for job {row.id} with a different spec; a key may "
                      "be reused only with the same spec", key)
        raise ApiError(422, "idempotency_key_reused",
                       f"Idempotency-Key {key!r} belongs to job {row.id}, whose spec differs from this one", [issue])
    return row


def create_job(*, session: Session, spec: JobSpec, idempotency_key: str | None = None) -> tuple[JobRow, bool]:
    """Queue a validated spec; with a key already used, answer the job it made instead.

    Concurrent requests with one key make one job: the key is unique in the table,
    and the request that loses the insert answers the winner's job.

    Returns:
        (the job, whether it was created now).

    Raises:
        ApiError: 422 when the key was used for a different spec.
    """
    digest = spec_hash(spec)
    if idempotency_key is not None:
        existing = session.scalar(select(JobRow).where(JobRow.idempotency_key == idempotency_key))
        if existing is not None:
            return _replay(existing, digest, idempotency_key), False
    job_id = new_job_id()
    row = JobRow(id=job_id, name=spec.name, study_prefix=f"{spec.name}-{job_id}", spec=spec.model_dump(mode="json"),
                 spec_hash=digest, status=JobStatus.QUEUED, attempts=0, cancel_requested=False,
                 idempotency_key=idempotency_key)
    session.add(row)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        if idempotency_key is None:
            raise
        winner = session.scalar(select(JobRow).where(JobRow.idempotency_key == idempotency_key))
        if winner is None:
            raise ApiError(409, "conflict", "the job could not be stored; send the request again") from exc
        return _replay(winner, digest, idempotency_key), False
    return row, True


def _check_id(job_id: str) -> None:
    """An id this service never makes is unknown without asking the database (which may refuse, e.g. NUL)."""
    if not JOB_ID.fullmatch(job_id):
        raise ApiError.not_found(job_id)


def get_job(*, session: Session, job_id: str) -> JobRow:
    """Raises: ApiError: 404 when no job has this id."""
    _check_id(job_id)
    row = session.get(JobRow, job_id, populate_existing=True)
    if row is None:
        raise ApiError.not_found(job_id)
    return row


def stored_report(row: JobRow) -> Report | None:
    """The job's report as the library's model, read back from the JSON its row keeps; None while it has none."""
    return Report.model_validate(row.report) if row.report is not None else None


def list_jobs(*, session: Session, status: JobStatus | None = None, limit: int = 20,
              offset: int = 0) -> tuple[list[JobRow], int]:
    """One page of jobs, newest first, and how many match in all."""
    where = [JobRow.status == status] if status is not None else []
    total = session.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0
    rows = session.scalars(select(JobRow).where(*where).order_by(JobRow.created_at.desc(), JobRow.id.desc())
                           .limit(limit).offset(offset)).all()
    return list(rows), total


def cancel_job(*, session: Session, job_id: str) -> JobRow:
    """A queued job is cancelled now (it never starts); a running one is asked to stop at its next epoch.

    Each step is one conditional UPDATE, so a runner claiming the job at the same
    moment either gets it before (and sees the request) or never gets it.

    Raises:
        ApiError: 404 for an unknown job, 409 for a finished one.
    """
    _check_id(job_id)
    now = utcnow()
    for current, values in (
        (JobStatus.QUEUED, {"status": JobStatus.CANCELLED, "cancel_requested": True, "finished_at": now,
                            "error": "cancelled before it started"}),
        (JobStatus.RUNNING, {"cancel_requested": True}),
    ):
        done = session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == current)
                               .values(updated_at=now, **values))
        session.commit()
        if done.rowcount:  # type: ignore[attr-defined]
            return get_job(session=session, job_id=job_id)
    row = get_job(session=session, job_id=job_id)
    if row.status in FINISHED:
        raise ApiError(409, "job_finished", already_finished(job_id, row.status))
    return row


def get_job_model(*, session: Session, job_id: str) -> tuple[JobRow, bytes]:
    """A job and the archive of its tuned model.

    Raises:
        ApiError: 404 when there is no such job, or it has not succeeded (no model yet).
    """
    row = get_job(session=session, job_id=job_id)
    archive = session.scalar(select(JobModelRow.archive).where(JobModelRow.job_id == job_id))
    if row.status != JobStatus.SUCCEEDED or archive is None:
        raise ApiError(404, "model_not_found", f"job {job_id} is {row.status}; its tuned model exists once it has "
                       "succeeded")
    return row, archive


def jobs_using_dataset(*, session: Session, dataset_id: str) -> list[str]:
    """The ids of queued or running jobs whose spec names upload ``dataset_id`` (few: the active jobs)."""
    rows = session.execute(select(JobRow.id, JobRow.spec)
                           .where(JobRow.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))).all()
    return [job_id for job_id, spec in rows
            if (spec.get("dataset") or {}).get("source") == "upload" and spec["dataset"].get("id") == dataset_id]
