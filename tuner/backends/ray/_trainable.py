"""What runs in a Ray worker: one Optuna trial, rebuilt from the shared storage and trained by ``run_trial``.

The worker writes the trial's user attributes and intermediate values itself,
exactly as the Optuna backend does. How the trial ended goes back to the driver
in its last Tune result (the ``outcome_*`` keys), where ``outcome_from`` reads it;
the driver tells the study.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune

from tuner.search import TrialOutcome, make_pruner, run_trial
from tuner.spec import parse_spec
from tuner.storage import open_storage
from tuner.train import Dataset

__all__ = ["TuneReportingTrial", "outcome_from", "train_trial"]

log = logging.getLogger(__name__)

REPORTED = ("train_loss", "val_loss", "gap", "epochs")
"""The metrics in a trial's last Tune result, beside its outcome."""


class TuneReportingTrial(optuna.trial.Trial):
    """An Optuna trial that also reports each epoch's val loss to Tune (``run_trial`` reports single objectives)."""

    def report(self, value: float, step: int) -> None:
        super().report(value, step)
        tune.report({"epoch": step, "val_loss": float(value)})


def train_trial(config: dict[str, Any], *, spec: dict[str, Any], study_name: str, storage_url: str,
                data: Dataset) -> None:
    """The Tune trainable: train the Optuna trial ``config["trial_id"]`` and report how it ended.

    Args:
        config: what the driver's searcher suggested: ``trial_id``, ``number``, ``stage`` and ``params``.
        spec: the job spec as JSON (``JobSpec.model_dump(mode="json")``).
        storage_url: the Optuna storage, as a worker process can open it.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    job = parse_spec(spec)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url),
                              pruner=make_pruner(job.search.pruner))
    trial = TuneReportingTrial(study, config["trial_id"])
    try:
        outcome = run_trial(trial, config["params"], spec=job, data=data, stage=config["stage"])
    except Exception as exc:  # a bug in one trial must not leave it RUNNING
        log.exception("trial %d of stage %s crashed", trial.number, config["stage"])
        trial.set_user_attr("fail_reason", repr(exc))
        outcome = TrialOutcome(TrialState.FAIL, reason=repr(exc))
    attrs = trial.user_attrs
    metrics: dict[str, Any] = {key: attrs[key] for key in REPORTED if key in attrs}
    tune.report({**metrics, "outcome_state": outcome.state.name, "outcome_values": outcome.values,
                 "outcome_reason": outcome.reason, "outcome_cancelled": outcome.cancelled})


def outcome_from(result: dict[str, Any] | None) -> TrialOutcome | None:
    """The outcome in a trial's last Tune result, or None when it ended before reporting one."""
    if not result or "outcome_state" not in result:
        return None
    return TrialOutcome(TrialState[result["outcome_state"]], values=result.get("outcome_values"),
                        reason=result.get("outcome_reason"), cancelled=bool(result.get("outcome_cancelled")))
