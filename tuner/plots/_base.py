"""What every plot shares: the figure, the colours, the trials worth drawing."""

from __future__ import annotations

import threading

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from optuna.trial import FrozenTrial, TrialState

matplotlib.use("Agg")  # no display: the service and CI draw headless

BASELINE_COLOR, CHOSEN_COLOR, FRONT_COLOR, KEPT_COLOR = "#555555", "#d62728", "#1f77b4", "#2ca02c"
STAGE_COLORS = ["#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
DPI = 100
LOCK = threading.Lock()  # matplotlib's font and text caches are shared between threads


def plain(text: object) -> str:
    """User text (a feature, stage or job name) as matplotlib draws it literally.

    An even number of ``$`` turns a matplotlib string into mathtext, and a header
    such as ``$x^2$`` or ``cost$ (in $)`` would then be parsed as TeX: drawn as a
    formula, or failing the whole plot (and the job page) with a parse error. Each
    ``$`` escaped as ``\\$`` is drawn as a dollar sign and never starts math.
    """
    return str(text).replace("$", r"\$")


def complete(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that finished and measured a val loss (pruned and failed ones stopped part-way)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and "val_loss" in t.user_attrs]


def stage_of(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get("stage", "?"))


def stage_colors(trials: list[FrozenTrial]) -> dict[str, str]:
    """One colour per stage, in the order the stages first appear (the job's order)."""
    stages = list(dict.fromkeys(stage_of(t) for t in trials))
    return {s: STAGE_COLORS[i % len(STAGE_COLORS)] for i, s in enumerate(stages)}


def stage_handles(colors: dict[str, str]) -> list[Line2D]:
    """Legend entries for the stage colours."""
    return [Line2D([], [], ls="", marker="o", color=c, label=plain(s)) for s, c in colors.items()]


def figure(width: float = 7.5, height: float = 4.2) -> Figure:
    """A white figure with constrained layout, not registered with pyplot (nothing global, nothing shown)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.patch.set_facecolor("white")
    return fig
