"""The Tune side of a job, in the driver: a searcher that hands out its stages' trials (a batch of them to a
Tune trial), one stage after the other, and records how each ended, and a stopper that ends the Tune run
when the job is cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.experiment import Trial as TuneTrial
from ray.tune.search import Searcher

from tuner.backends._batches import batch_room, note_batching, trials_per_batch
from tuner.backends.ray._mailbox import start_mailbox
from tuner.backends.ray._trainable import member_outcomes
from tuner.search import StageRun, TrialOutcome, fail_trial
from tuner.train import Dataset

__all__ = ["INTERRUPTED", "STOP_POLL_S", "StageSearcher", "TrialRegistry"]

log = logging.getLogger(__name__)

STOP_POLL_S = 0.5
"""How often the driver asks ``should_stop`` while trials run (it may query a database)."""

INTERRUPTED = "stopped before it finished: the job was cancelled"


@dataclass
class _Handed:
    """What one Tune trial was given: its stage, its members not yet told (by the index each joined at), and
    how many it was given in all (the next one's index)."""

    run: StageRun
    untold: dict[int, optuna.Trial]
    given: int

    def add(self, members: list[tuple[optuna.Trial, dict[str, float]]]) -> None:
        self.untold.update({self.given + i: trial for i, (trial, _) in enumerate(members)})
        self.given += len(members)


class StageSearcher(Searcher):
    """Hands Tune the trials of the job's stages, one stage after the other (``run.ask``), up to ``per_batch``
    to a Tune trial, and tells the study how each ended (``run.finish``) as soon as its result comes back.

    It takes the next stage from ``stages`` once the current one has no trial left to hand out and none
    running. Taking it closes the current one; what closing raises (``Cancelled``, ``RegtuneError``)
    ends the Tune run, and ``end`` raises it once the run is over.

    A batch is refilled as its members end, as the thread backend refills one, with the places it grows by
    early in a stage (``batch_room``): its worker asks with a result (``want``: the free places, ``live``:
    the members training on, ``request``: its number), and the searcher answers through ``mailbox``
    (always, with no member when there is none), so the sampler still runs here, in the driver.
    """

    def __init__(self, stages: Iterator[StageRun], data: Dataset, *, refillable: bool = False) -> None:
        super().__init__()
        self.stages = stages
        self.data = data
        self.refillable = refillable  # whether batches are refilled from here (some stage batches, without vmap)
        self.mailbox_name = f"regtune-mailbox-{uuid.uuid4().hex}"  # where a worker finds it (``ray.get_actor``)
        # the ``Mailbox`` actor, started now: its worker is ready by the time the first batch asks
        self.mailbox: Any = start_mailbox(self.mailbox_name) if refillable else None
        self.run: StageRun | None = None  # the stage handing out trials
        self.over = False  # no stage is left, or taking the next one raised (``error``)
        self.error: Exception | None = None
        self.per_batch = 1
        self.refilled = False  # whether the current stage's batches are refilled from here
        self.room: Callable[[], int] = lambda: self.per_batch
        self.stopper = _CancelStopper(self)
        self.handed: dict[str, _Handed] = {}  # per Tune trial still running, what it was given
        self.tune_trials: dict[str, TuneTrial] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        # (Ray annotates ``Optional[Dict]``, yet documents returning ``Searcher.FINISHED``, a str.)
        while (run := self.run or self._next_stage()) is not None:
            members = run.ask_up_to(min(self.per_batch, self.room()))
            if members:
                self.handed[trial_id] = handed = _Handed(run, {}, 0)
                handed.add(members)
                return {"stage": run.stage.name, "study": run.study.study_name,
                        "size": self.per_batch if self.refilled else len(members), "members": _described(members),
                        "mailbox": self.mailbox_name if self.refilled else None}
            if run.cancelled:
                return Searcher.FINISHED
            if run.in_flight > 0:  # trials still running may fail or be pruned, and the budget then needs more
                return None  # ask again later
            self.run = None  # nothing to hand out, nothing running: the next stage
        return Searcher.FINISHED

    def _next_stage(self) -> StageRun | None:
        """Take the next stage, which closes the current one; None when there is none or closing raised."""
        if self.over:
            return None
        try:
            self.run = next(self.stages, None)
        except Exception as exc:  # ``end`` raises it once Tune has stopped
            self.error = exc
            self.run = None
        if self.run is None:
            self.over = True
            return None
        self.per_batch = trials_per_batch(self.run.spec, self.data, self.run.target)
        self.refilled = self.refillable and self.per_batch > 1
        self.room = batch_room(self.run, self.per_batch) if self.refilled else (lambda: self.per_batch)
        note_batching(self.run, self.data, self.per_batch)
        return self.run

    def close_mailbox(self) -> None:
        """End the ``Mailbox`` actor, if there is one."""
        if self.mailbox is not None:
            ray.kill(self.mailbox)
            self.mailbox = None

    def end(self) -> None:
        """After the Tune run: mark the stage it stopped in cancelled if a stop was asked, and raise what taking a
        stage raised. The stage left open is closed by whoever takes the next stage from ``stages``."""
        if self.stopper.fired and self.run is not None:
            self.run.cancelled = True
        if self.error is not None:
            raise self.error

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._tell(trial_id, result)  # the members that ended first: the sampler proposes knowing how
        if "want" in result:
            self._refill(trial_id, result)

    def _refill(self, trial_id: str, result: dict[str, Any]) -> None:
        """Answer a batch's request for members: as many as it has free places and the stage has room for."""
        members: list[tuple[optuna.Trial, dict[str, float]]] = []
        try:
            handed = self.handed.get(trial_id)
            if handed is not None and handed.run is self.run:  # (a Tune trial ended, or of a stage gone by: none)
                members = handed.run.ask_up_to(min(int(result["want"]), max(0, self.room() - int(result["live"]))))
                handed.add(members)
        finally:  # the worker waits for an answer: it always gets one
            self.mailbox.put.remote(trial_id, int(result["request"]), _described(members))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        self._tell(trial_id, result)  # the last result, when Tune stopped the trial before passing it on
        handed = self.handed.pop(trial_id, None)
        tune_trial = self.tune_trials.pop(trial_id, None)
        if handed is None:
            return
        for trial in handed.untold.values():
            with self._recording(handed.run, trial):
                if error:
                    outcome = fail_trial(trial.storage, trial._trial_id,
                                         f"the Ray worker running it failed: {_error_of(tune_trial)}")
                else:
                    outcome = self._interrupted(trial)
                handed.run.finish(trial, outcome)

    def _tell(self, trial_id: str, result: dict[str, Any] | None) -> None:
        """Tell the study how each member a result reports ended, once."""
        handed = self.handed.get(trial_id)
        if handed is None:
            return
        for index, outcome in member_outcomes(result):
            trial = handed.untold.pop(index, None)
            if trial is not None:
                with self._recording(handed.run, trial):
                    handed.run.finish(trial, outcome)

    def interrupt_unfinished(self) -> None:
        """Trials Tune stopped without telling the searcher (it does so when stopping the whole run)."""
        for handed in self.handed.values():
            for trial in handed.untold.values():
                with self._recording(handed.run, trial):
                    handed.run.finish(trial, self._interrupted(trial))
        self.handed.clear()

    def _interrupted(self, trial: optuna.Trial) -> TrialOutcome:
        cancelled = self.stopper.fired
        reason = INTERRUPTED if cancelled else "stopped before it finished: Ray Tune ended the run"
        return fail_trial(trial.storage, trial._trial_id, reason, interrupted=True, cancelled=cancelled)

    @contextlib.contextmanager
    def _recording(self, run: StageRun, trial: optuna.Trial) -> Iterator[None]:
        """A trial that cannot be recorded ends its stage with the reason, as with the Optuna backend."""
        try:
            yield
        except Exception as exc:
            log.exception("could not record trial %d of stage %s", trial.number, run.stage.name)
            run.abort(f"recording trial {trial.number} failed: {exc!r}")

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        return True  # the search space is the stage's, not Tune's

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study in Optuna's storage is the search state (a rerun resumes from it)."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see ``save``)."""

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its config (the searcher with it) for its own resume, which regtune does not use;
        # the stage, its study and its lock stay in the driver.
        return {**self.__dict__, "stages": None, "data": None, "run": None, "error": None, "stopper": None,
                "handed": {}, "tune_trials": {}, "room": None, "mailbox": None}


def _described(members: list[tuple[optuna.Trial, dict[str, float]]]) -> list[dict[str, Any]]:
    """Members as a worker rebuilds them: each Optuna trial's id and number, and its configuration."""
    return [{"trial_id": t._trial_id, "number": t.number, "params": c} for t, c in members]


def _error_of(tune_trial: TuneTrial | None) -> str:
    """The gist of the error Tune recorded for a trial: the first and last lines of its error file."""
    error_file = tune_trial.error_file if tune_trial is not None else None
    text = Path(error_file).read_text(errors="replace") if error_file and os.path.exists(error_file) else ""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure #")]
    if not lines:
        return "no error was recorded (see the Ray logs)"
    gist = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return gist if len(gist) <= 400 else gist[:399] + "…"


class TrialRegistry(tune.Callback):
    """Keeps Tune's trial objects for the searcher, which needs them to read why a worker failed."""

    def __init__(self, searcher: StageSearcher) -> None:
        self.searcher = searcher

    def on_trial_start(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial, **info: Any) -> None:
        self.searcher.tune_trials[trial.trial_id] = trial

    def __getstate__(self) -> dict[str, Any]:
        return {"searcher": None}


class _CancelStopper(tune.Stopper):
    """Stops the whole Tune run when the current stage's ``should_stop`` answers True (polled every
    STOP_POLL_S)."""

    def __init__(self, searcher: StageSearcher) -> None:
        self.searcher = searcher
        self.fired = False
        self._next_poll = 0.0

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        run = self.searcher.run
        if not self.fired and run is not None and run.should_stop is not None and time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + STOP_POLL_S
            self.fired = bool(run.should_stop())
        return self.fired

    def __getstate__(self) -> dict[str, Any]:
        return {"searcher": None, "fired": self.fired, "_next_poll": 0.0}
