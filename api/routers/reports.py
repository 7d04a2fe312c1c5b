"""``/jobs/{id}/report``: the library's report of a job that has succeeded."""

from __future__ import annotations

from fastapi import APIRouter

from api import repository
from api.deps import SessionDep
from api.errors import ApiError
from api.messages import no_report
from api.openapi import errors
from api.tables import JobStatus
from tuner import Report

router = APIRouter(prefix="/jobs", tags=["reports"])


@router.get("/{job_id}/report", response_model=Report, responses=errors(404, 409) | {
    200: {"description": "the report as DESIGN.md describes it: diagnosis, baseline, chosen, stages, pareto, "
                         "importances, features"}})
def read_job_report(session: SessionDep, job_id: str) -> Report:
    """The report (JSON) once the job has succeeded; 409 while it is queued or running, or when it failed."""
    row = repository.get_job(session=session, job_id=job_id)
    report = repository.stored_report(row) if row.status == JobStatus.SUCCEEDED else None
    if report is None:
        raise ApiError(409, "report_not_ready", no_report(job_id, row.status))
    return report
