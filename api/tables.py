"""The jobs table. Trials are not here: they live in Optuna's tables of the same database."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["FINISHED", "Base", "JobModelRow", "JobRow", "JobStatus", "utcnow"]


class AnyCaseStrEnum(enum.StrEnum):
    """A string enum that also takes its values in any case (``?status=FAILED`` is ``failed``)."""

    @classmethod
    def _missing_(cls, value: object) -> AnyCaseStrEnum | None:
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.lower():
                    return member
        return None


class JobStatus(AnyCaseStrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo: how every timestamp is stored (SQLite keeps no time zones)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    """One job: its spec, where it stands in the queue, who holds its lease, and its report."""

    __tablename__ = "regtune_jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in JobStatus)})", name="ck_regtune_jobs_status"),
        Index("ix_regtune_jobs_status_created", "status", "created_at"),
        Index("ix_regtune_jobs_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    study_prefix: Mapped[str] = mapped_column(String(140))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class JobModelRow(Base):
    """The tuned model of a job that succeeded: a zip of ``model.safetensors`` and ``model.json``."""

    __tablename__ = "regtune_job_models"

    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("regtune_jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    archive: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
