"""The runners table: which runners exist and when each was last seen, so the service can tell whether
anyone will run the jobs it queues (``/readyz``).

Each runner registers when it starts, is seen on every poll and every lease renewal, and
removes itself when it stops politely; a runner killed outright simply stops being seen.
Every timestamp is the database's clock, like the leases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Index, String, delete, func, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from api.dbclock import db_now
from api.tables import Base, JobRow, JobStatus

__all__ = ["Readiness", "RunnerRow", "forget_runner", "read_readiness", "register_runner", "see_runner"]

FORGET_AFTER_S = 7 * 24 * 3600  # rows of runners unseen this long are dropped when another one registers


class RunnerRow(Base):
    """One runner process: where it runs, and when it was last seen alive."""

    __tablename__ = "regtune_runners"
    __table_args__ = (Index("ix_regtune_runners_last_seen", "last_seen_at"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)


def register_runner(*, session: Session, runner: str) -> None:
    """Add ``runner``, seen now; forget runners unseen for a week."""
    session.execute(delete(RunnerRow).where(RunnerRow.last_seen_at < db_now(-FORGET_AFTER_S)))
    session.execute(delete(RunnerRow).where(RunnerRow.id == runner))
    session.execute(insert(RunnerRow).values(id=runner, started_at=db_now(), last_seen_at=db_now()))
    session.commit()


def see_runner(*, session: Session, runner: str, job_id: str | None = None) -> None:
    """``runner`` is alive now (holding ``job_id``, or idle); re-adds it if its row was dropped."""
    seen = session.execute(update(RunnerRow).where(RunnerRow.id == runner).values(
        last_seen_at=db_now(), job_id=job_id))
    if not seen.rowcount:  # type: ignore[attr-defined]
        session.execute(insert(RunnerRow).values(id=runner, started_at=db_now(), last_seen_at=db_now(),
                                                 job_id=job_id))
    session.commit()


def forget_runner(*, session: Session, runner: str) -> None:
    """``runner`` stopped politely: it is no longer counted."""
    session.execute(delete(RunnerRow).where(RunnerRow.id == runner))
    session.commit()


@dataclass(frozen=True)
class Readiness:
    """Whether queued jobs will be run: how many wait, and how many runners were seen lately."""

    queued: int
    runners: int
    within_seconds: float

    @property
    def ready(self) -> bool:
        return self.queued == 0 or self.runners > 0

    def reason(self) -> str:
        return (f"{self.queued} job(s) queued, and no runner was seen in the last {self.within_seconds:g}s "
                "(REGTUNE_RUNNER_SEEN_SECONDS): start `regtune worker`, or `regtune serve` with its runner")


def read_readiness(*, session: Session, within_seconds: float) -> Readiness:
    """Count the queued jobs and the runners seen in the last ``within_seconds``."""
    queued = session.scalar(select(func.count()).select_from(JobRow).where(JobRow.status == JobStatus.QUEUED))
    runners = session.scalar(select(func.count()).select_from(RunnerRow).where(
        RunnerRow.last_seen_at >= db_now(-within_seconds)))
    session.commit()
    return Readiness(int(queued or 0), int(runners or 0), within_seconds)
