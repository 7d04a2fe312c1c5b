"""The report of a finished job: built from the stages (``build_report``), written as Markdown and as the job page.

``Report`` is its typed model: ``report.json`` is its JSON, and every reader goes through it.

Building it retrains the top candidates with other seeds and measures the test
split, the only place that reads it. The page (``render_html``) embeds plots it
is given; drawing them is ``tuner.plots``'s part, so this package needs no matplotlib.
"""

from tuner.pareto import pareto_front
from tuner.report._build import build_report
from tuner.report._candidates import Candidate
from tuner.report._cost import retrain_cost, stage_cost, total_cost
from tuner.report._explain import EDGE, bound_hits, pareto_choice, stable_features
from tuner.report._html import (
    CAPTIONS,
    CSS,
    StageProgress,
    html_document,
    render_html,
    stage_progress,
)
from tuner.report._markdown import diagnose, epoch_gaps, render_markdown, stage_count
from tuner.report._model import (
    BoundHit,
    CandidateSummary,
    ChosenRun,
    Curves,
    EpochGap,
    FeatureStability,
    FeatureSummary,
    LambdaMaxSearch,
    LearningCurve,
    ParetoChoice,
    ParetoPoint,
    PathPoint,
    Preprocessing,
    Refit,
    Report,
    RunSummary,
    SeedSummary,
    StageCost,
    StageSummary,
    TableColumn,
    Validation,
)

__all__ = [
    "CAPTIONS",
    "CSS",
    "EDGE",
    "BoundHit",
    "Candidate",
    "CandidateSummary",
    "ChosenRun",
    "Curves",
    "EpochGap",
    "FeatureStability",
    "FeatureSummary",
    "LambdaMaxSearch",
    "LearningCurve",
    "ParetoChoice",
    "ParetoPoint",
    "PathPoint",
    "Preprocessing",
    "Refit",
    "Report",
    "RunSummary",
    "SeedSummary",
    "StageCost",
    "StageProgress",
    "StageSummary",
    "TableColumn",
    "Validation",
    "bound_hits",
    "build_report",
    "diagnose",
    "epoch_gaps",
    "html_document",
    "pareto_choice",
    "pareto_front",
    "render_html",
    "render_markdown",
    "retrain_cost",
    "stable_features",
    "stage_cost",
    "stage_count",
    "stage_progress",
    "total_cost",
]
