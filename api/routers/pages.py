"""HTML for people: the jobs page ``GET /``, a job's page and its plots as PNG images.

Plain server-rendered HTML, self-contained (inline CSS, plots as data URIs): a
page makes no request beyond the service itself.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from api import repository
from api.deps import SessionDep, StorageDep
from api.errors import ApiError
from api.job_pages import PlotCache, dashboard_links, job_trials, render_jobs_page, study_ids
from api.messages import no_report
from api.openapi import errors
from api.studies import read_progress
from api.tables import JobStatus
from tuner.plots import PLOTS, render_plot
from tuner.report import render_html

router = APIRouter(tags=["pages"])

_plots = PlotCache()
_HTML: dict[int | str, dict[str, Any]] = {200: {"content": {"text/html": {}}, "description": "an HTML page"}}
_PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}


@router.get("/", response_class=HTMLResponse, responses=_HTML | errors(422))
def read_jobs_page(request: Request, session: SessionDep, storage: StorageDep, status: JobStatus | None = None,
                   limit: Annotated[int, Query(ge=1, le=100)] = 50,
                   offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0) -> HTMLResponse:
    """The jobs, newest first: status, progress, best so far, a link to each job's page and its studies."""
    rows, total = repository.list_jobs(session=session, status=status, limit=limit, offset=offset)
    jobs = []
    for row in rows:
        stages, best = read_progress(session=session, prefix=row.study_prefix, spec=row.spec)
        jobs.append((row, stages, best, study_ids(storage, [(s.name, s.study_name) for s in stages])))
    return HTMLResponse(render_jobs_page(jobs, total=total, offset=offset, limit=limit,
                                         status=status.value if status else None,
                                         logout=request.app.state.credentials.any_token))


@router.get("/jobs/{job_id}/report.html", response_class=HTMLResponse, responses=_HTML | errors(404))
def read_job_page(session: SessionDep, storage: StorageDep, job_id: str) -> HTMLResponse:
    """A job's page: the verdict and every plot once it has succeeded; progress and plots so far before."""
    row = repository.get_job(session=session, job_id=job_id)
    stages, _ = read_progress(session=session, prefix=row.study_prefix, spec=row.spec)
    trials, ids = job_trials(storage, row)
    report = repository.stored_report(row) if row.status == JobStatus.SUCCEEDED else None
    page = render_html(report, _plots.plots(row, trials), title=f"{row.name} ({row.id})",
                       status=str(row.status), progress=stages, error=row.error,
                       study_links=dashboard_links(ids), home_href="/")
    return HTMLResponse(page)


@router.get("/jobs/{job_id}/plots/{name}.png", response_class=Response,
            responses=_PNG | errors(404, 409))
def read_job_plot(session: SessionDep, storage: StorageDep, job_id: str, name: str) -> Response:
    """One plot of a job as a PNG image, for papers and tickets. The names: the keys of ``tuner.plots.PLOTS``.

    The plots of the trials (pareto, history, knobs, sparsity) exist while the job runs; those of the report
    (learning_curves, importances, candidates, features) once it has succeeded (409 until then).
    """
    if name not in PLOTS:
        shown = name if len(name) <= 64 else name[:64] + "..."
        raise ApiError(404, "plot_not_found",
                       f"no plot is named {shown!r}; the plots are: {', '.join(PLOTS)}")
    row = repository.get_job(session=session, job_id=job_id)
    trials, _ = job_trials(storage, row)
    if row.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        png = _plots.plots(row, trials).get(name)
    else:
        png = render_plot(name, None, trials)
    if png is None:
        if row.status != JobStatus.SUCCEEDED:
            raise ApiError(409, "plot_not_ready", no_report(job_id, row.status, f"plot {name!r}"))
        raise ApiError(404, "plot_not_available", f"job {job_id} has nothing to draw in plot {name!r} (for "
                       "example: sparsity and features need an L1 search, importances two varying knobs)")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})
