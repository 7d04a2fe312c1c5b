"""Plots drawn from the finished report: learning curves, importances, candidates over seeds, features."""

from __future__ import annotations

import math
import re
from typing import Any

from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from optuna.trial import FrozenTrial

from tuner.knobs import fmt_params
from tuner.plots._base import BASELINE_COLOR, CHOSEN_COLOR, FRONT_COLOR, KEPT_COLOR, figure, plain
from tuner.report import Report

__all__ = ["candidates", "features", "importances", "learning_curves"]

MAX_NAMED_FEATURES = 60  # above this, features are drawn as a grid of cells without names
REMOVED_COLOR = "#cccccc"  # grey, as the features plot's title says


def learning_curves(report: Report | None, trials: list[FrozenTrial]) -> Figure | None:
    if report is None or not report.curves.baseline.val:
        return None
    same = not any(report.chosen.params.values())  # the baseline itself was chosen
    fig = figure()
    ax = fig.add_subplot()
    for key, color in [("baseline", BASELINE_COLOR)] + ([] if same else [("chosen", CHOSEN_COLOR)]):
        curve = report.curves.baseline if key == "baseline" else report.curves.chosen
        train, val = curve.train, curve.val
        label = "baseline" if key == "baseline" else f"chosen ({fmt_params(report.chosen.params)})"
        ax.plot(range(1, len(train) + 1), train, "--", color=color, label=f"{label}: train")
        ax.plot(range(1, len(val) + 1), val, "-", color=color, lw=2, label=f"{label}: val")
        n = min(len(train), len(val))
        ax.fill_between(range(1, n + 1), train[:n], val[:n], color=color, alpha=0.12, lw=0)
    ax.set(xlabel="epoch", ylabel="loss (plain: no penalty, no smoothing)",
           title="Learning curves" + (" of the baseline (chosen)" if same else ": baseline vs chosen")
           + "; shaded: the gap")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def importances(report: Report | None, trials: list[FrozenTrial]) -> Figure | None:
    items = sorted(report.importances.items() if report is not None else [], key=lambda kv: kv[1])
    if not items:
        return None
    fig = figure(7.5, 1.2 + 0.45 * len(items))
    ax = fig.add_subplot()
    bars = ax.barh([k for k, _ in items], [v for _, v in items], color=FRONT_COLOR)
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
    ax.set(xlim=(0, 1.1), xlabel="share of the val loss's variance (fANOVA, sums to 1)",
           title="Parameter importances")
    ax.grid(axis="x", alpha=0.3)
    return fig


def candidates(report: Report | None, trials: list[FrozenTrial]) -> Figure | None:
    """Mean ± std of each candidate over seeds, each seed as a tick; the first candidate is the baseline."""
    if report is None or not report.candidates:
        return None
    cands, chosen = report.candidates, report.chosen
    fig = figure(7.5, 1.4 + 0.6 * len(cands))
    ax = fig.add_subplot()
    labels = []
    for y, c in enumerate(reversed(cands)):
        is_base = y == len(cands) - 1
        is_chosen = (c.stage, c.trial) == (chosen.stage, chosen.trial)
        color = CHOSEN_COLOR if is_chosen else BASELINE_COLOR if is_base else FRONT_COLOR
        mean, std = c.val_loss_mean, c.val_loss_std
        ax.barh(y, 2 * std, left=mean - std, height=0.5, color=color, alpha=0.3)
        ax.errorbar(mean, y, xerr=std, fmt="o", color=color, capsize=5, ms=7)
        seeds = c.val_losses
        ax.scatter(seeds, [y] * len(seeds), marker="|", s=120, color="black", zorder=4)
        tag = "baseline" if is_base else f"{plain(c.stage)} #{c.trial}"
        labels.append(f"{tag}{' (chosen)' if is_chosen else ''}\n{fmt_params(c.params)}")
    ax.set_yticks(range(len(cands)), labels, fontsize=8)
    ax.set(xlabel=f"val loss over {cands[0].n} seeds: mean ± std (ticks: each seed)",
           title="Final candidates re-trained over seeds")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _natural(name: str) -> list[Any]:
    """``pixel_2_10`` after ``pixel_2_9``: numbers inside names compare as numbers."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name)]


def features(report: Report | None, trials: list[FrozenTrial]) -> Figure | None:
    feats = report.features if report is not None else None
    if feats is None:
        return None
    kept, removed = list(feats.kept), list(feats.removed)
    n = len(kept) + len(removed)
    title = f"L1 kept {len(kept)} of {n} input features (green), removed {len(removed)} (grey)"
    if n > MAX_NAMED_FEATURES:  # a grid in natural name order: image pixels come out as the image
        side = math.ceil(math.sqrt(n))
        keep = set(kept)
        cells = [[0.5] * side for _ in range(side)]
        for i, name in enumerate(sorted(kept + removed, key=_natural)):
            cells[i // side][i % side] = 1.0 if name in keep else 0.0
        fig = figure(6.0, 6.0)
        ax = fig.add_subplot()
        # exactly the two colours the title names (and white for the grid's empty tail)
        ax.imshow(cells, cmap=ListedColormap([REMOVED_COLOR, "white", KEPT_COLOR]), vmin=0.0, vmax=1.0)
    else:
        cols, rows = 3, max(1, math.ceil(n / 3))
        fig = figure(9.0, max(1.6, 0.8 + 0.3 * rows))
        ax = fig.add_subplot()
        for i, (name, on) in enumerate([(k, True) for k in kept] + [(r, False) for r in removed]):
            x, y = i % cols, rows - 1 - i // cols
            ax.add_patch(Rectangle((x + 0.02, y + 0.08), 0.96, 0.84, color=KEPT_COLOR if on else REMOVED_COLOR))
            ax.text(x + 0.5, y + 0.5, plain(name[:34]), ha="center", va="center", fontsize=8,
                    color="white" if on else "#444444")
        ax.set(xlim=(0, cols), ylim=(0, rows))
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return fig
