"""The jobs table as the runners use it: claim, renew the lease, finish, give back, reclaim the lost.

Every change is a conditional UPDATE on (status, lease owner), so two runners can
never both hold a job, and a runner that lost its lease can no longer write to it.
Claims take ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (runners never wait on each
other); SQLite serializes writers, and the conditional UPDATE decides there. Every
timestamp here is the database's clock (``db_now``), never a runner's: runners whose
clocks disagree still agree on when a lease runs out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.dbclock import db_now
from api.tables import JobModelRow, JobRow, JobStatus

__all__ = ["Expired", "claim_job", "finish_job", "read_cancel", "release_job", "renew_lease", "requeue_expired"]

_CANDIDATES = 8


def claim_job(*, session: Session, owner: str, lease_seconds: float) -> JobRow | None:
    """Take the oldest queued job for ``owner`` and start its lease; None when the queue is empty."""
    query = (select(JobRow.id).where(JobRow.status == JobStatus.QUEUED)
             .order_by(JobRow.created_at, JobRow.id).limit(_CANDIDATES))
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    for job_id in session.scalars(query).all():
        taken = session.execute(
            update(JobRow).where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, lease_owner=owner, attempts=JobRow.attempts + 1,
                    lease_expires_at=db_now(lease_seconds), heartbeat_at=db_now(),
                    started_at=func.coalesce(JobRow.started_at, db_now()), updated_at=db_now(), error=None)
        )
        if taken.rowcount:  # type: ignore[attr-defined]
            session.commit()
            return session.get(JobRow, job_id, populate_existing=True)
    session.commit()
    return None


def _mine(job_id: str, owner: str) -> list[Any]:
    return [JobRow.id == job_id, JobRow.status == JobStatus.RUNNING, JobRow.lease_owner == owner]


def renew_lease(*, session: Session, job_id: str, owner: str, lease_seconds: float) -> bool:
    """Extend ``owner``'s lease; False when it is no longer theirs (expired and taken back)."""
    renewed = session.execute(update(JobRow).where(*_mine(job_id, owner)).values(
        heartbeat_at=db_now(), lease_expires_at=db_now(lease_seconds)))
    session.commit()
    return bool(renewed.rowcount)  # type: ignore[attr-defined]


def read_cancel(*, session: Session, job_id: str, owner: str) -> bool | None:
    """Whether a cancel was asked for ``owner``'s job; None when the job is no longer theirs."""
    flag = session.scalar(select(JobRow.cancel_requested).where(*_mine(job_id, owner)))
    session.commit()
    return flag


def finish_job(*, session: Session, job_id: str, owner: str, status: JobStatus,
               report: dict[str, Any] | None = None, error: str | None = None,
               model_archive: bytes | None = None) -> bool:
    """Record how ``owner``'s job ended, with its tuned model; False (and nothing written) when the lease was lost."""
    done = session.execute(update(JobRow).where(*_mine(job_id, owner)).values(
        status=status, report=report, error=error, finished_at=db_now(), updated_at=db_now(), lease_expires_at=None))
    if done.rowcount and model_archive is not None:  # type: ignore[attr-defined]
        session.merge(JobModelRow(job_id=job_id, archive=model_archive))  # the same transaction as the status
    session.commit()
    return bool(done.rowcount)  # type: ignore[attr-defined]


def release_job(*, session: Session, job_id: str, owner: str, reason: str) -> bool:
    """Give a job back to the queue (its runner is shutting down); the attempt does not count."""
    done = session.execute(update(JobRow).where(*_mine(job_id, owner)).values(
        status=JobStatus.QUEUED, attempts=JobRow.attempts - 1, lease_expires_at=None, updated_at=db_now(),
        error=reason))
    session.commit()
    return bool(done.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Expired:
    """A job whose runner stopped renewing its lease, and what became of it."""

    id: str
    spec: dict[str, Any]
    study_prefix: str
    status: JobStatus
    lost_owner: str | None


def requeue_expired(*, session: Session, max_attempts: int,
                    before: Callable[[Expired], None] | None = None) -> list[Expired]:
    """Take back every job whose lease ran out: queued again, or failed after ``max_attempts`` claims.

    A job that was asked to cancel is cancelled instead. ``before`` runs for each job before
    its change is committed, while no other runner can claim it yet: the runner marks the lost
    owner's RUNNING trials failed there, so it never touches a trial of the job's next owner.
    Its completed trials stay. When ``before`` raises, nothing is committed; a later pass tries again.
    """
    query = select(JobRow).where(JobRow.status == JobStatus.RUNNING, JobRow.lease_expires_at < db_now())
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    out: list[Expired] = []
    for row in session.scalars(query).all():
        owner = row.lease_owner
        if row.cancel_requested:
            status, error = JobStatus.CANCELLED, f"cancelled; its runner {owner} stopped before it could stop the job"
            values: dict[str, Any] = {"finished_at": db_now()}
        elif row.attempts >= max_attempts:
            status = JobStatus.FAILED
            error = (f"its runner stopped renewing the lease {row.attempts} time(s), and max_attempts is "
                     f"{max_attempts} (REGTUNE_MAX_ATTEMPTS); last runner: {owner}")
            values = {"finished_at": db_now()}
        else:
            status, error = JobStatus.QUEUED, f"requeued: the lease of runner {owner} expired"
            values = {}
        expired = Expired(row.id, row.spec, row.study_prefix, status, owner)
        if before is not None:
            before(expired)
        taken = session.execute(update(JobRow).where(
            JobRow.id == row.id, JobRow.status == JobStatus.RUNNING, JobRow.lease_owner == owner,
            JobRow.lease_expires_at < db_now(),
        ).values(status=status, error=error, lease_expires_at=None, updated_at=db_now(), **values))
        if taken.rowcount:  # type: ignore[attr-defined]
            out.append(expired)
    session.commit()
    return out
