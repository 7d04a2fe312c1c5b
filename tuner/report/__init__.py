"""The report of a finished job: built from the stages (``build_report``), written as Markdown and as the job page.

``Report`` is its typed model: ``report.json`` is its JSON, and every reader goes through it.

Building it retrains the top candidates with other seeds and measures the test
split, the only place that reads it. The page (``render_html``) embeds plots it
is given; drawing them is ``tuner.plots``'s part, so this package needs no matplotlib.
"""

from tuner.report._build import build_report, pareto_front
from tuner.report._candidates import Candidate
from tuner.report._html import (
    CAPTIONS,
    CSS,
    StageLike,
    StageProgress,
    html_document,
    render_html,
    stage_progress,
)
from tuner.report._markdown import diagnose, render_markdown
from tuner.report._model import (
    CandidateSummary,
    ChosenRun,
    Curves,
    FeatureSummary,
    LearningCurve,
    ParetoPoint,
    Report,
    RunSummary,
    SeedSummary,
    StageSummary,
)

__all__ = [
    "CAPTIONS",
    "CSS",
    "Candidate",
    "CandidateSummary",
    "ChosenRun",
    "Curves",
    "FeatureSummary",
    "LearningCurve",
    "ParetoPoint",
    "Report",
    "RunSummary",
    "SeedSummary",
    "StageLike",
    "StageProgress",
    "StageSummary",
    "build_report",
    "diagnose",
    "html_document",
    "pareto_front",
    "render_html",
    "render_markdown",
    "stage_progress",
]
