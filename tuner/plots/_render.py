"""The report's pictures as PNG bytes: matplotlib (Agg) figures, no pyplot, no display, no network.

Each plot is a function ``(report, trials) -> Figure | None`` in a small registry;
``None`` means the job has nothing to draw for it (no L1 searched, no candidates
yet). A running job has no report: with ``report=None`` the plots drawn from the
trials alone (pareto, history, knobs, sparsity) still come out.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from tuner.plots._base import DPI, LOCK
from tuner.plots._path import l1_path
from tuner.plots._report import candidates, features, importances, learning_curves
from tuner.plots._trials import history, knobs, pareto, sparsity
from tuner.report import Report

__all__ = ["PLOTS", "PlotFn", "render_plot", "render_plots"]

PlotFn = Callable[[Report | None, list[FrozenTrial]], Figure | None]

PLOTS: dict[str, PlotFn] = {
    "learning_curves": learning_curves,
    "pareto": pareto,
    "history": history,
    "knobs": knobs,
    "importances": importances,
    "candidates": candidates,
    "sparsity": sparsity,
    "l1_path": l1_path,
    "features": features,
}
"""Every plot by name, in the order the job page shows them."""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": "regtune"})
    return buf.getvalue()


def render_plot(name: str, report: Report | None, trials: list[FrozenTrial]) -> bytes | None:
    """One plot as PNG bytes, or None when the job has nothing to draw for it.

    Args:
        name: a key of ``PLOTS``.
        report: the job's report; None while it has none.
        trials: every trial of the job's stage studies, in stage order.

    Raises:
        KeyError: ``name`` is not a plot; the message lists the valid names.
    """
    if name not in PLOTS:
        raise KeyError(f"unknown plot {name!r}; valid plots are: {', '.join(PLOTS)}")
    with LOCK:
        fig = PLOTS[name](report, trials)
        return None if fig is None else _png(fig)


def render_plots(report: Report | None, trials: list[FrozenTrial]) -> dict[str, bytes]:
    """Every plot the job has data for, as PNG bytes by name, in ``PLOTS`` order.

    Args:
        report: the job's report; None for a running job (then only the trial-based plots come out).
        trials: every trial of the job's stage studies, in stage order.
    """
    out = {}
    for name in PLOTS:
        png = render_plot(name, report, trials)
        if png is not None:
            out[name] = png
    return out
