"""What the search cost: per stage, trials and epochs run of those budgeted, what pruning saved, seconds.

A user weighing a bigger search needs the bill of this one. Epochs come from
each trial's record (the epochs it trained, or its reported intermediate values
when a dead process left none); seconds are each trial's wall time from start to
finish, as its storage recorded it, so pruned and failed trials count too.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

__all__ = ["retrain_cost", "stage_cost", "total_cost"]


def _epochs(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get("epochs", len(trial.intermediate_values)))


def _seconds(trial: FrozenTrial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def stage_cost(name: str, trials: list[FrozenTrial], epochs_per_trial: int) -> dict[str, Any]:
    """The bill of one stage's trials.

    Args:
        epochs_per_trial: the training budget of one trial (``training.epochs``).

    Returns:
        trials by state, ``epochs_run`` of ``epochs_budgeted`` (every trial started, at the full
        budget), ``epochs_saved_by_pruning`` and ``epochs_saved_by_early_stopping``, and ``seconds``.
    """
    count = {state: [t for t in trials if t.state == state] for state in TrialState}
    started = [t for t in trials if t.state != TrialState.WAITING]
    return {
        "stage": name,
        "trials": len(started),
        "complete": len(count[TrialState.COMPLETE]),
        "pruned": len(count[TrialState.PRUNED]),
        "failed": len(count[TrialState.FAIL]),
        "epochs_run": sum(_epochs(t) for t in started),
        "epochs_budgeted": epochs_per_trial * len(started),
        "epochs_saved_by_pruning": sum(epochs_per_trial - _epochs(t) for t in count[TrialState.PRUNED]),
        "epochs_saved_by_early_stopping": sum(epochs_per_trial - _epochs(t) for t in count[TrialState.COMPLETE]),
        "seconds": round(sum(_seconds(t) for t in started), 3),
    }


def retrain_cost(runs: list[tuple[int, float]], epochs_per_run: int | None,
                 name: str = "re-training over seeds") -> dict[str, Any]:
    """The bill of runs outside the stages (re-training the candidates over seeds), from each (epochs, seconds).

    Args:
        epochs_per_run: each run's budget; None for runs of a set length (a refit), which stop at nothing.
    """
    budgets = [e if epochs_per_run is None else epochs_per_run for e, _ in runs]
    return {"stage": name, "trials": len(runs), "complete": len(runs), "pruned": 0,
            "failed": 0, "epochs_run": sum(e for e, _ in runs), "epochs_budgeted": sum(budgets),
            "epochs_saved_by_pruning": 0,
            "epochs_saved_by_early_stopping": sum(b - e for b, (e, _) in zip(budgets, runs, strict=True)),
            "seconds": round(sum(s for _, s in runs), 3)}


def total_cost(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows summed (the name becomes ``total``)."""
    keys = [k for k in rows[0] if k != "stage"] if rows else []
    out: dict[str, Any] = {"stage": "total"}
    for k in keys:
        out[k] = round(sum(r[k] for r in rows), 3) if k == "seconds" else sum(r[k] for r in rows)
    return out
