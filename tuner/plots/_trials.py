"""Plots drawn from the trials alone, so a running job has them too: the Pareto front, history, knobs."""

from __future__ import annotations

import math

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial

from tuner.knobs import knob_of
from tuner.pareto import pareto_front
from tuner.plots._base import (
    BASELINE_COLOR,
    CHOSEN_COLOR,
    FRONT_COLOR,
    complete,
    figure,
    plain,
    stage_colors,
    stage_handles,
    stage_of,
)
from tuner.report import ChosenRun, Report, RunSummary
from tuner.spec import KNOBS

__all__ = ["history", "knobs", "pareto", "sparsity"]

def _point(t: FrozenTrial) -> tuple[float, float]:
    return float(t.user_attrs["val_loss"]), float(t.user_attrs["gap"])


def _report_point(trials: list[FrozenTrial], row: RunSummary) -> tuple[float, float]:
    """Where a report row (baseline, chosen) sits: its search trial if found, else its re-trained run."""
    if isinstance(row, ChosenRun):  # the baseline row names no trial
        for t in trials:
            if t.number == row.trial and stage_of(t) == row.stage:
                return _point(t)
    return float(row.val_loss), float(row.gap)


def pareto(report: Report | None, trials: list[FrozenTrial]) -> Figure | None:
    done = [t for t in complete(trials) if "gap" in t.user_attrs]
    if not done:
        return None
    fig = figure()
    ax = fig.add_subplot()
    for stage, color in stage_colors(done).items():
        pts = [_point(t) for t in done if stage_of(t) == stage]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color=color, alpha=0.75,
                   label=f"{plain(stage)} ({len(pts)})")
    front = [_point(t) for t in pareto_front(done, key=_point)]
    ax.plot([p[0] for p in front], [p[1] for p in front], "-o", color=FRONT_COLOR, mfc="none", ms=9, lw=1.2,
            drawstyle="steps-post", label="Pareto front")
    if report is not None:
        marks = ((report.baseline, "baseline", "X", 120, BASELINE_COLOR),
                 (report.chosen, "chosen", "*", 240, CHOSEN_COLOR))
        for row, key, marker, size, color in marks:
            x, y = _report_point(done, row)
            ax.scatter([x], [y], marker=marker, s=size, color=color, edgecolor="black", zorder=5, label=key)
    ax.axhline(0.0, color="black", lw=0.6, alpha=0.5)
    ax.set(xlabel="val loss (lower is better)", ylabel="gap = val loss − train loss",
           title="Trade-off: val loss vs gap over every trial")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def history(report: Report | None, trials: list[FrozenTrial]) -> Figure | None:
    done = complete(trials)
    if not done:
        return None
    fig = figure()
    ax = fig.add_subplot()
    ys = [float(t.user_attrs["val_loss"]) for t in done]
    for n, (stage, color) in enumerate(stage_colors(done).items()):
        idx = [i for i, t in enumerate(done) if stage_of(t) == stage]
        xs = [i + 1 for i in idx]
        ax.scatter(xs, [ys[i] for i in idx], s=22, color=color, label=plain(stage), zorder=3)
        ax.plot(xs, [min(ys[idx[0]:i + 1]) for i in idx], "-", color=color, lw=1.5, drawstyle="steps-post")
        if n:
            ax.axvline(xs[0] - 0.5, color="black", lw=0.5, alpha=0.4)
    ax.plot([], [], "-", color="black", label="best so far in the stage")
    ax.set(xlabel="trial (in the order the stages ran)", ylabel="val loss",
           title="Optimization history, per stage")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _knob_key(name: str) -> tuple[int, str]:
    base = knob_of(name)
    return (KNOBS.index(base) if base in KNOBS else len(KNOBS), name)


def _is_log(name: str, trials: list[FrozenTrial], values: list[float]) -> bool:
    """A log prior, as the trials' own distributions say; on a grid, values spanning two decades or more."""
    for t in trials:
        dist = t.distributions.get(name)
        if isinstance(dist, FloatDistribution):
            return dist.log
    pos = [v for v in values if v > 0]
    return bool(pos) and max(pos) / min(pos) >= 100


def _x_positions(ax: Axes, values: list[float], log: bool) -> list[float]:
    """x positions; on a log axis, 0 (the knob off) sits in a shaded column a decade left of the rest."""
    if not log:
        return values
    ax.set_xscale("log")
    pos = [v for v in values if v > 0]
    if len(pos) == len(values):
        return values
    off = (min(pos) if pos else 1.0) / 10
    ax.axvspan(off / 2, off * 2, color="#eeeeee", zorder=0)
    ax.text(off, 1.0, "0 (off)", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    return [v if v > 0 else off for v in values]


def knobs(report: Report | None, trials: list[FrozenTrial]) -> Figure | None:
    done = complete(trials)
    configs = [t.user_attrs.get("config", {}) for t in done]
    names = sorted({k for c in configs for k in c if len({float(cc.get(k, 0.0)) for cc in configs}) > 1},
                   key=_knob_key)
    if not names:
        return None
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = figure(max(6.5, 3.2 * ncols + 0.5), 3.0 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    colors = stage_colors(done)
    for i, (ax, name) in enumerate(zip(axes, names, strict=False)):
        vals = [float(c.get(name, 0.0)) for c in configs]
        log = _is_log(name, done, vals)
        ax.scatter(_x_positions(ax, vals, log), [t.user_attrs["val_loss"] for t in done], s=18, alpha=0.8,
                   color=[colors[stage_of(t)] for t in done])
        ax.set_xlabel(name + (" (log axis)" if log else ""))
        ax.grid(alpha=0.3)
        if i % ncols == 0:
            ax.set_ylabel("val loss")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.legend(handles=stage_handles(colors), loc="outside upper right", fontsize=8, ncols=len(colors))
    fig.suptitle("Val loss against each knob", x=0.02, ha="left")
    return fig


def sparsity(report: Report | None, trials: list[FrozenTrial]) -> Figure | None:
    done = [t for t in complete(trials) if "sparsity" in t.user_attrs]
    l1 = [float(t.user_attrs.get("config", {}).get("l1", 0.0)) for t in done]
    if not any(l1):
        return None
    fig = figure()
    ax = fig.add_subplot()
    colors = stage_colors(done)
    ax.scatter(_x_positions(ax, l1, True), [t.user_attrs["sparsity"] for t in done], s=22, alpha=0.8,
               c=[colors[stage_of(t)] for t in done])
    ax.set(xlabel="λ₁ (L1 strength, log axis)", ylabel="sparsity (fraction of weights exactly 0)",
           title="Sparsity vs λ₁", ylim=(-0.03, 1.03))
    ax.legend(handles=stage_handles(colors), fontsize=8)
    ax.grid(alpha=0.3)
    return fig
