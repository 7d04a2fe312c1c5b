"""What runs in a Ray worker: one Tune trial's Optuna trials, rebuilt from the shared storage and trained.

A Tune trial carries one Optuna trial, trained by ``run_trial``, or a batch of K
(``search.batch``), trained as one batched model by ``train_members`` exactly as
the thread backend trains a batch. The worker writes each trial's user
attributes and intermediate values itself, exactly as the Optuna backend does.
How each member ended goes back to the driver in a Tune result of its own (the
``member`` and ``outcome_*`` keys), reported as soon as it ends, where
``member_outcome`` reads it; the driver tells the study.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
import ray
import torch
from optuna.trial import TrialState
from ray import tune

from tuner.backends._batches import Asked, batched_alone, torch_threads, train_members
from tuner.search import TrialOutcome, make_pruner, run_trial
from tuner.spec import parse_spec
from tuner.storage import open_storage
from tuner.train import Dataset

__all__ = ["member_outcome", "train_trial"]

HEARTBEAT_S = 0.5
"""How often a Tune trial gives Tune a result it can stop it at: per-epoch results would each wait on the driver."""

REFILL_WAIT_S = 60.0
"""How long a batch waits for the driver's answer to its request for members."""

REPORTED = ("train_loss", "val_loss", "gap", "epochs")
"""The metrics in a member's outcome result, beside its outcome."""


def train_trial(config: dict[str, Any], *, spec: dict[str, Any], storage_url: str, data: Dataset) -> None:
    """The Tune trainable: train the Optuna trials ``config["members"]`` and report how each ended.

    Args:
        config: what the driver's searcher suggested: ``stage``, ``study`` (its study's name), ``size`` (the
            most members the batch holds), ``members``, each with its ``trial_id``, ``number`` and ``params``,
            and ``mailbox``: the name of the actor where the driver answers the batch's requests for members
            (``Mailbox``; None: the batch is not refilled).
        spec: the job spec as JSON (``JobSpec.model_dump(mode="json")``).
        storage_url: the Optuna storage, as a worker process can open it.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    job = parse_spec(spec)
    torch.set_num_threads(torch_threads(job, data))  # as the thread backend's workers: workers × threads = cores
    study = optuna.load_study(study_name=config["study"], storage=open_storage(storage_url, ready=True),
                              pruner=make_pruner(job.search.pruner))
    members: list[dict[str, Any]] = config["members"]
    size = int(config.get("size", len(members)))
    if size == 1 and not batched_alone(job, data):
        [member] = members
        trial = optuna.Trial(study, member["trial_id"])
        _report(0, trial, run_trial(trial, member["params"], spec=job, data=data, stage=config["stage"],
                                    should_stop=_Heartbeat()))
        return
    asked: list[Asked] = [(optuna.Trial(study, m["trial_id"]), m["params"]) for m in members]
    refills = _Refills(study, ray.get_actor(config["mailbox"]), size) if config.get("mailbox") else None
    train_members(asked, spec=job, data=data, stage=config["stage"], on_told=_report, should_stop=_Heartbeat(),
                  size=size, ask=refills)


class _Refills:
    """A batch's free places, filled by the driver: a result asks for them (``want``), the driver's answer is
    taken from the mailbox. Without an answer in ``REFILL_WAIT_S`` the batch shrinks (what the driver asked
    for it then fails as interrupted when the Tune trial ends)."""

    def __init__(self, study: optuna.Study, mailbox: Any, size: int) -> None:
        self.study, self.mailbox, self.size = study, mailbox, size
        self.trial_id = tune.get_context().get_trial_id()
        self.requests = 0
        self.refused = 0  # the free places of the last request answered with none: not asked again until more

    def __call__(self, free: int) -> list[Asked]:
        if free <= self.refused:
            return []
        self.requests += 1
        tune.report({"want": free, "live": self.size - free, "request": self.requests})
        members = ray.get(self.mailbox.take.remote(self.trial_id, self.requests, REFILL_WAIT_S)) or []
        self.refused = 0 if members else free
        return [(optuna.Trial(self.study, m["trial_id"]), m["params"]) for m in members]


class _Heartbeat:
    """A trial's stop question, answered by Tune: a result at most every ``HEARTBEAT_S``, where Tune ends a
    trial it was told to stop (a cancel). Per-epoch results would each wait on the driver."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self) -> bool:
        if time.monotonic() - self.last >= HEARTBEAT_S:
            self.last = time.monotonic()
            tune.report({"heartbeat": True})  # a result of no member: the searcher passes it by
        return False


def _report(index: int, trial: optuna.Trial, outcome: TrialOutcome) -> None:
    """One Tune result: how member ``index`` ended, with its last metrics (all written: the driver tells the
    study, which then takes no more writes for the trial)."""
    attrs = trial.user_attrs
    metrics: dict[str, Any] = {key: attrs[key] for key in REPORTED if key in attrs}
    tune.report({**metrics, "member": index, "outcome_state": outcome.state.name, "outcome_values": outcome.values,
                 "outcome_reason": outcome.reason, "outcome_cancelled": outcome.cancelled})


def member_outcome(result: dict[str, Any] | None) -> tuple[int, TrialOutcome] | None:
    """The member a Tune result tells of and how it ended, or None for a result that tells of none."""
    if not result or "outcome_state" not in result:
        return None
    return int(result.get("member", 0)), TrialOutcome(
        TrialState[result["outcome_state"]], values=result.get("outcome_values"),
        reason=result.get("outcome_reason"), cancelled=bool(result.get("outcome_cancelled")))
