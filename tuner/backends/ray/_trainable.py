"""What runs in a Ray worker: one Tune trial's Optuna trials, rebuilt from the shared storage and trained.

A Tune trial carries one Optuna trial, trained by ``run_trial``, or a batch of K
(``search.batch``), trained as one batched model by ``train_members`` exactly as
the thread backend trains a batch. The worker writes each trial's user
attributes and intermediate values itself, exactly as the Optuna backend does.
How each member ended goes back to the driver in a Tune result (its ``outcomes``),
where ``member_outcomes`` reads it; the driver tells the study. A batch the driver
refills sends the members that ended at an epoch boundary with its request for
their replacements, one result where there were one per member and one more for
the request (each waits on the driver): the driver tells them, then asks.
"""

from __future__ import annotations

import contextlib
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

__all__ = ["member_outcomes", "train_trial"]

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
    refilled = bool(config.get("mailbox"))
    outbox = _Outbox(held=refilled)
    try:
        if size == 1 and not batched_alone(job, data):
            [member] = members
            trial = optuna.Trial(study, member["trial_id"])
            outbox.add(0, trial, run_trial(trial, member["params"], spec=job, data=data, stage=config["stage"],
                                           should_stop=outbox.heartbeat))
            return
        asked: list[Asked] = [(optuna.Trial(study, m["trial_id"]), m["params"]) for m in members]
        refills = _Refills(study, ray.get_actor(config["mailbox"]), size, outbox) if refilled else None
        train_members(asked, spec=job, data=data, stage=config["stage"], on_told=outbox.add,
                      should_stop=outbox.heartbeat, size=size, ask=refills)
    except BaseException:
        with contextlib.suppress(Exception):  # how the members that ended did, if it can still go
            outbox.send()
        raise
    outbox.send()  # what ended with no request after it (a cancel, the last members)


class _Outbox:
    """How members ended, on their way to the driver in Tune results, and the heartbeat those results keep.

    Every result waits on the driver, so the worker sends as few as it can: with ``held`` (a batch the driver
    refills) the members that end wait for the request for members that follows them at their epoch boundary
    (``_Refills``), or for the next poll of the stop question, and go in its result. Otherwise each is sent
    as it ends.
    """

    def __init__(self, *, held: bool) -> None:
        self.held = held
        self.pending: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}  # the last member's, at the result's top level, for Tune to show
        self.last = time.monotonic()

    def add(self, index: int, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        """Member ``index`` ended (all its rows written: the driver tells the study, which then takes no more
        writes for the trial)."""
        attrs = trial.user_attrs
        self.metrics = {key: attrs[key] for key in REPORTED if key in attrs}
        self.pending.append({"member": index, "state": outcome.state.name, "values": outcome.values,
                             "reason": outcome.reason, "cancelled": outcome.cancelled})
        if not self.held:
            self.send()

    def send(self, **request: Any) -> None:
        """One Tune result: the members held, and ``request`` (a request for members); none when neither."""
        if not (self.pending or request):
            return
        result = {**self.metrics, "outcomes": self.pending, **request} if self.pending else dict(request)
        self.pending, self.metrics = [], {}
        self.last = time.monotonic()
        tune.report(result)

    def heartbeat(self) -> bool:
        """A trial's stop question, answered by Tune: a result at most every ``HEARTBEAT_S`` (any result, with
        the members held if there are), where Tune ends a trial it was told to stop (a cancel). Per-epoch
        results would each wait on the driver. Always False: Tune stops the trial itself."""
        if self.pending:
            self.send()
        elif time.monotonic() - self.last >= HEARTBEAT_S:
            self.last = time.monotonic()
            tune.report({"heartbeat": True})  # a result of no member: the searcher passes it by
        return False


class _Refills:
    """A batch's free places, filled by the driver: a result asks for them (``want``), with the members that
    ended before it (``_Outbox``), and the driver's answer is taken from the mailbox. Without an answer in
    ``REFILL_WAIT_S`` the batch shrinks (what the driver asked for it then fails as interrupted when the Tune
    trial ends)."""

    def __init__(self, study: optuna.Study, mailbox: Any, size: int, outbox: _Outbox) -> None:
        self.study, self.mailbox, self.size, self.outbox = study, mailbox, size, outbox
        self.trial_id = tune.get_context().get_trial_id()
        self.requests = 0
        self.refused = 0  # the free places of the last request answered with none: not asked again until more

    def __call__(self, free: int) -> list[Asked]:
        if free <= self.refused:  # (0: no room now) nothing to ask: what ended goes alone
            self.outbox.send()
            return []
        self.requests += 1
        self.outbox.send(want=free, live=self.size - free, request=self.requests)
        members = ray.get(self.mailbox.take.remote(self.trial_id, self.requests, REFILL_WAIT_S)) or []
        self.refused = 0 if members else free
        return [(optuna.Trial(self.study, m["trial_id"]), m["params"]) for m in members]


def member_outcomes(result: dict[str, Any] | None) -> list[tuple[int, TrialOutcome]]:
    """The members a Tune result tells of and how each ended, in the order they ended (none for most)."""
    return [(int(o["member"]), TrialOutcome(TrialState[o["state"]], values=o.get("values"), reason=o.get("reason"),
                                            cancelled=bool(o.get("cancelled"))))
            for o in (result or {}).get("outcomes") or []]
