"""The L1 path plot: validation loss and columns kept against λ₁, the choice marked."""

from __future__ import annotations

from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from tuner.plots._base import CHOSEN_COLOR, FRONT_COLOR, KEPT_COLOR, figure
from tuner.report import Report

__all__ = ["l1_path"]


def l1_path(report: Report | None, trials: list[FrozenTrial]) -> Figure | None:
    """Val loss ± one SE (left axis) and input columns kept (right axis) along the path, λ₁ falling to the right."""
    if report is None or not report.l1_path:
        return None
    path = report.l1_path
    lams = [p.l1 for p in path]
    fig = figure(7.5, 4.4)
    ax = fig.add_subplot()
    ax.errorbar(lams, [p.val_loss for p in path], yerr=[p.val_loss_se for p in path], fmt="o-",
                color=FRONT_COLOR, ms=4, capsize=2, lw=1.2, label="val loss ± 1 SE")
    best = min(path, key=lambda p: p.val_loss)
    ax.axhline(best.val_loss + best.val_loss_se, color=FRONT_COLOR, ls=":", lw=1,
               label="best + 1 SE")
    kept = ax.twinx()
    kept.step(lams, [p.features_kept for p in path], where="mid", color=KEPT_COLOR, lw=1.8,
              label="columns kept")
    kept.set_ylabel("input columns kept", color=KEPT_COLOR)
    kept.set_ylim(bottom=0)
    chosen = float(report.chosen.params.get("l1", 0.0))
    if chosen > 0:
        ax.axvline(chosen, color=CHOSEN_COLOR, lw=2, label=f"chosen λ₁ = {chosen:.3g}")
    ax.set_xscale("log")
    ax.set_xlim(max(lams) * 1.3, min(lams) / 1.3)  # glmnet's reading order: strongest penalty on the left
    ax.set(xlabel="λ₁ (log scale, falling to the right)", ylabel="val loss (plain)",
           title=f"L1 path: {len(path)} points from λ_max = {max(lams):.3g}, each warm-started from the last")
    handles = ax.get_legend_handles_labels()
    more = kept.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper center")
    ax.grid(alpha=0.3)
    return fig
