"""What the service says about a job's state, in words a person would use ("was cancelled", not "is cancelled")."""

from __future__ import annotations

from api.tables import JobStatus

__all__ = ["already_finished", "no_report"]

_FINISHED = {
    JobStatus.SUCCEEDED: "has already succeeded",
    JobStatus.FAILED: "has already failed",
    JobStatus.CANCELLED: "was already cancelled",
}


def already_finished(job_id: str, status: str) -> str:
    """Why a finished job cannot be cancelled."""
    return f"job {job_id} {_FINISHED.get(JobStatus(status), status)}; only a queued or running job can be cancelled"


def no_report(job_id: str, status: str, what: str = "its report") -> str:
    """Why a job has no report (or a plot drawn from it) to give."""
    status = JobStatus(status)
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        return f"job {job_id} is still {status}; {what} is written once it succeeds"
    if status == JobStatus.FAILED:
        return f"job {job_id} failed, so {what} was never written; GET /jobs/{job_id} says why it failed"
    if status == JobStatus.CANCELLED:
        return f"job {job_id} was cancelled before {what} was written"
    return f"job {job_id} succeeded but {what} is missing"
