"""What the HTML pages read and draw: a job's trials and studies, its plots (cached once it has finished),
the dashboard's links, and the jobs page.

Trials come from Optuna's tables of the same database, through Optuna's storage API.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from html import escape
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from api.repository import stored_report
from api.schemas import BestSoFar, StageProgress
from api.studies import stage_studies
from api.tables import FINISHED, JobRow, JobStatus
from tuner.knobs import fmt_params
from tuner.plots import render_plots
from tuner.report import html_document
from tuner.search import count_text

__all__ = ["PlotCache", "dashboard_links", "job_studies", "job_trials", "render_jobs_page", "study_ids"]

REFRESH_SECONDS = 5


def job_studies(row: JobRow) -> list[tuple[str, str]]:
    """``(stage, study name)`` of each stage in order: the report's names once it has one, else the spec's."""
    report = stored_report(row)
    if report is not None and report.stages:
        return [(s.name, s.study_name) for s in report.stages]
    return [(stage.name, name) for stage, name in stage_studies(prefix=row.study_prefix, spec=row.spec)]


def study_ids(storage: optuna.storages.BaseStorage, studies: list[tuple[str, str]]) -> dict[str, int]:
    """Stage → study id, for the ``(stage, study name)`` pairs whose study exists (its stage has started)."""
    ids: dict[str, int] = {}
    for stage, name in studies:
        try:
            ids[stage] = storage.get_study_id_from_name(name)
        except KeyError:
            continue
    return ids


def job_trials(storage: optuna.storages.BaseStorage, row: JobRow) -> tuple[list[FrozenTrial], dict[str, int]]:
    """Every trial of the job's stage studies in stage order, and the study id of each started stage."""
    ids = study_ids(storage, job_studies(row))
    trials: list[FrozenTrial] = []
    for sid in ids.values():
        trials += sorted(storage.get_all_trials(sid, deepcopy=False), key=lambda t: t.number)
    return trials, ids


def dashboard_links(study_ids: dict[str, int]) -> dict[str, str]:
    """Stage name → the stage's study page in the Optuna dashboard mounted by the service."""
    return {stage: f"/dashboard/studies/{sid}" for stage, sid in study_ids.items()}


class PlotCache:
    """PNGs of finished jobs, which never change again: drawn once, kept for the ``size`` latest jobs.

    A job still queued or running is drawn afresh each time (its trials keep coming).
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._plots: OrderedDict[tuple[str, datetime | None], dict[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def plots(self, row: JobRow, trials: list[FrozenTrial]) -> dict[str, bytes]:
        report = stored_report(row) if row.status == JobStatus.SUCCEEDED else None
        if row.status not in FINISHED:
            return render_plots(report, trials)
        key = (row.id, row.finished_at)
        with self._lock:
            if key in self._plots:
                self._plots.move_to_end(key)
                return self._plots[key]
        plots = render_plots(report, trials)
        with self._lock:
            self._plots[key] = plots
            while len(self._plots) > self.size:
                self._plots.popitem(last=False)
        return plots


def _when(value: datetime | None) -> str:
    if value is None:
        return "–"
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")


def _best(best: BestSoFar | None) -> str:
    if best is None or best.value is None:
        return "–"
    params = {k: float(v) for k, v in best.params.items() if isinstance(v, (int, float))}
    return (f"{best.value:.4g} <small>({escape(best.stage)} #{best.trial}: "
            f"{escape(fmt_params(params))})</small>")


def _job_row(row: JobRow, stages: list[StageProgress], best: BestSoFar | None, ids: dict[str, int]) -> str:
    done, total = sum(min(s.done, s.total) for s in stages), sum(s.total for s in stages)
    count = count_text(done, total, pruned=sum(s.pruned for s in stages), failed=sum(s.failed for s in stages),
                       running=sum(s.running for s in stages))
    running = row.status == JobStatus.RUNNING
    current = next((s.name for s in stages if s.done < s.total), None) if running else None
    links = dashboard_links(ids)
    studies = " · ".join(f'<a href="{escape(links[s.name])}">{escape(s.name)}</a>' if s.name in links
                         else escape(s.name) for s in stages)
    status = escape(str(row.status))
    return (f'<tr><td><a href="/jobs/{escape(row.id)}/report.html">{escape(row.name)}</a><br>'
            f"<small><code>{escape(row.id)}</code></small></td>"
            f'<td><span class="status {status}">{status}</span></td>'
            f'<td><progress max="{total}" value="{done}"></progress> {escape(count)}'
            f"{f'<br><small>stage {escape(current)}</small>' if current else ''}</td>"
            f"<td>{_best(best)}</td><td>{studies}</td><td><small>{_when(row.created_at)}</small></td></tr>")


def render_jobs_page(jobs: list[tuple[JobRow, list[StageProgress], BestSoFar | None, dict[str, int]]], *,
                     total: int, offset: int, limit: int, status: str | None, logout: bool = False) -> str:
    """The jobs page: one row per job (status, progress, best so far, its page, its studies in the dashboard).

    Args:
        jobs: each job with its stages' progress, its best trial so far and its stages' study ids.
        total: jobs matching the filter, all pages together.
        logout: show a "log out" button (the service has a token, so browsers log in).
    """
    active = any(row.status not in FINISHED for row, *_ in jobs)
    query: dict[str, Any] = {"status": status} if status else {}

    def href(at: int) -> str:
        args = {**query, "offset": at, "limit": limit}
        return "/?" + "&amp;".join(f"{k}={escape(str(v))}" for k, v in args.items())

    nav = []
    if offset > 0:
        nav.append(f'<a href="{href(max(0, offset - limit))}">← newer</a>')
    if offset + limit < total:
        nav.append(f'<a href="{href(offset + limit)}">older →</a>')
    filters = " · ".join(['<a href="/">all</a>'] + [f'<a href="/?status={s.value}">{s.value}</a>'
                                                     for s in JobStatus])
    rows = "".join(_job_row(*job) for job in jobs)
    shown = f"{offset + 1}–{offset + len(jobs)} of {total}" if jobs else f"none of {total}"
    body = (f'<h1>regtune jobs</h1><p class="meta">{shown} job(s){f" ({escape(status)})" if status else ""}'
            f"{f' · reloads every {REFRESH_SECONDS} s' if active else ''} · "
            f'<a href="/dashboard">Optuna dashboard</a> · <a href="/openapi.json">OpenAPI schema</a></p>'
            + ('<form method="post" action="/logout"><button type="submit">Log out</button></form>' if logout else "")
            + f"<p>{filters}</p>"
            "<table><tr><th>job</th><th>status</th><th>progress</th><th>best so far</th>"
            f"<th>studies in the dashboard</th><th>created</th></tr>{rows}</table><p>{' · '.join(nav)}</p>")
    if not jobs:
        body += ("<p>No jobs yet: submit a spec with <code>regtune submit SPEC</code> or "
                 "<code>POST /jobs</code>.</p>")
    return html_document("regtune jobs", body, refresh_seconds=REFRESH_SECONDS if active else None)
