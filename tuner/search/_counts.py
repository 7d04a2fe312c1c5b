"""One way to count a stage's trials, for every place that shows it: the CLI, report.md, the job pages.

A stage's budget is a number of trials that reached a verdict (COMPLETE or PRUNED), so the
count shown is that number of the budget, with the pruned and failed ones (and any still
running) beside it: "8/8 trials (4 pruned, 1 failed)". Counting only completed trials made
an 8-trial stage with 4 prunes read "4/4".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

__all__ = ["TrialCount", "count_text"]


def count_text(judged: int, budget: int, *, pruned: int = 0, failed: int = 0, running: int = 0) -> str:
    """``"<judged>/<budget> trials"``, then the pruned, failed and running ones in brackets when there are any."""
    other = ", ".join(f"{n} {what}" for what, n in (("pruned", pruned), ("failed", failed), ("running", running))
                      if n)
    return f"{judged}/{budget} trials" + (f" ({other})" if other else "")


@dataclass(frozen=True)
class TrialCount:
    """A stage's trials by outcome, against its budget."""

    budget: int
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0

    @classmethod
    def of(cls, states: Iterable[TrialState], budget: int) -> TrialCount:
        states = list(states)
        return cls(budget, *(sum(s == state for s in states) for state in
                             (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)))

    @property
    def judged(self) -> int:
        """Trials that count toward the budget: COMPLETE or PRUNED (``BUDGET_STATES``)."""
        return self.complete + self.pruned

    def as_dict(self) -> dict[str, Any]:
        """The report's fields: ``trials`` (judged), ``budget``, and each outcome."""
        return {"trials": self.judged, "budget": self.budget, "completed": self.complete, "pruned": self.pruned,
                "failed": self.failed}

    def __str__(self) -> str:
        return count_text(self.judged, self.budget, pruned=self.pruned, failed=self.failed, running=self.running)
