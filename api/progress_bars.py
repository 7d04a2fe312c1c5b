"""Progress bars and the closing summary table of ``regtune run``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from tuner import Report
from tuner.knobs import fmt_params
from tuner.report import stage_count
from tuner.search import StageOutcome

__all__ = ["BarProgress"]


class BarProgress:
    """One bar per stage, advanced by each completed trial; failures and prunes are counted beside it."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar: tqdm[Any] | None = None
        self._best: float | None = None
        self._other: dict[str, int] = {}

    def stage_started(self, name: str, study_name: str, total: int, done: int) -> None:
        self._best, self._other = None, {}
        if not self.quiet:
            self._bar = tqdm(total=total, initial=done, desc=f"{name:>12}", unit="trial", file=sys.stderr,
                             dynamic_ncols=True, leave=True)

    def trial_finished(self, stage: str, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            value = trial.values[0]
            self._best = value if self._best is None else min(self._best, value)
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and self._bar is not None:
            self._bar.update(1)  # both count toward the budget
        if trial.state != TrialState.COMPLETE:
            key = trial.state.name.lower()
            self._other[key] = self._other.get(key, 0) + 1
        if self._bar is not None:
            post = {"best": f"{self._best:.4g}" if self._best is not None else "-", **self._other}
            self._bar.set_postfix(post, refresh=True)

    def stage_finished(self, outcome: StageOutcome) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, report: Report, out: Path) -> None:
        b, c = report.baseline, report.chosen
        metric = c.test_metric[0]
        print(f"\n{report.diagnosis}\n")
        print(f"{'':10} {'train loss':>11} {'val loss':>11} {'gap':>9} {'val mean±std':>16} {metric:>9}  params")
        for label, row in (("baseline", b), ("chosen", c)):
            s = row.seeds
            print(f"{label:10} {row.train_loss:>11.4f} {row.val_loss:>11.4f} {row.gap:>9.4f} "
                  f"{s.val_loss_mean:>9.4f}±{s.val_loss_std:<6.4f} {row.test_metric[1]:>9.4f}  "
                  f"{fmt_params(row.params)}")
        print("\n" + "  ".join(f"{s.name} {stage_count(s)}" for s in report.stages))
        if report.features is not None and c.params.get("l1", 0.0) > 0:  # with l1 = 0, nothing was removed by L1
            f = report.features
            print(f"\nL1 kept {len(f.kept)} features, removed {len(f.removed)}")
        print(f"\nreport: {out / 'report.html'}  {out / 'report.json'}  {out / 'report.md'}")
