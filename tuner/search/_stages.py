"""Stages: one Optuna study each, earlier stages' best values fixed, their trials warming the sampler.

A stage's budget is its number of trials that reached a verdict: COMPLETE, or
PRUNED (a pruned trial was judged; counting only survivors would raise the
pruner's bar with every trial). FAILED trials (a NaN loss, a crash, an
interruption) are retried and do not count. Running a stage again
against the same storage resumes it: trials left RUNNING by a killed process are
marked failed (``interrupted``), completed ones count, a finished stage is skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import Cancelled, RegtuneError
from tuner.knobs import Knobs, knob_of
from tuner.limits import attempts_allowed
from tuner.search._resume import check_fingerprint
from tuner.search._samplers import WARM_STARTABLE, WarmStartSampler, make_pruner, make_sampler, pruner_startup
from tuner.search._space import encode, grid_space, off_is_known, suggest
from tuner.search._tell import tell
from tuner.search._trial import TrialOutcome, fail_trial, objective_values, set_attrs
from tuner.spec import JobSpec, StageSpec
from tuner.storage import TrialsRead, new_trial_reading, together

__all__ = [
    "BUDGET_STATES",
    "StageOutcome",
    "StageRun",
    "best_of",
    "budget_used",
    "close_stage",
    "complete_trials",
    "fail_interrupted",
    "open_stage",
]

log = logging.getLogger(__name__)


@dataclass
class StageOutcome:
    """A finished stage: its study, its best trial, and the knob values it fixes for later stages."""

    name: str
    study_name: str
    study: optuna.Study
    trials: int
    best: FrozenTrial | None
    fixed: dict[str, float]


BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def budget_used(study: optuna.Study) -> int:
    """How many of the stage's budgeted trials are done (COMPLETE or PRUNED)."""
    return len(study.get_trials(deepcopy=False, states=BUDGET_STATES))


def fail_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage, runner: str | None = None) -> int:
    """Mark trials left RUNNING by a process that died as FAIL with ``interrupted: true``.

    Args:
        runner: only the trials of this runner (the ``runner`` user attribute), and those that carry
            none; None for every RUNNING trial.
    """
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if runner is None or t.user_attrs.get("runner", runner) == runner]
    failed = 0
    for t in stale:
        try:
            fail_trial(storage, t._trial_id, "the process running it stopped", interrupted=True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # it finished after all, while we looked
            continue
        failed += 1
    return failed


def best_of(trials: list[FrozenTrial], objectives: list[str]) -> FrozenTrial | None:
    """The trial with the lowest first objective (val loss for a Pareto search), read from its metrics."""
    scored = [t for t in trials if "val_loss" in t.user_attrs]
    if not scored:
        return None
    return min(scored, key=lambda t: objective_values(t.user_attrs, objectives)[0])


@dataclass
class StageRun:
    """One stage being run: hands out budgeted trials and takes their outcomes. Thread-safe."""

    spec: JobSpec
    stage: StageSpec
    study: optuna.Study
    fixed: dict[str, float]
    target: int
    done: int
    should_stop: Callable[[], bool] | None = None
    on_trial: Callable[[FrozenTrial], None] | None = None
    trial_attrs: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 0
    attempts: int = 0
    last_failure: str | None = None
    cause: BaseException | None = None
    cancelled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def max_attempts(self) -> int:
        return attempts_allowed(self.target)

    @property
    def prunable(self) -> bool:
        """Whether the pruner can prune any trial of the stage: the median pruner waits for
        ``MEDIAN_STARTUP_TRIALS`` completed ones, so in a stage of no more trials it is not asked at all
        (each question reads the study)."""
        startup = pruner_startup(self.spec.search.pruner)
        return startup is None or self.target > startup

    def _reserve(self) -> bool:
        """Take one slot of the budget; False when it is spent or a stop was asked. Holds the lock."""
        if self.cancelled or self.done + self.in_flight >= self.target or self.attempts >= self.max_attempts:
            return False
        if self.should_stop is not None and self.should_stop():
            self.cancelled = True
            return False
        self.in_flight += 1
        self.attempts += 1
        return True

    def ask_up_to(self, n: int) -> list[tuple[optuna.Trial, dict[str, float]]]:
        """Up to ``n`` new trials and their configurations: ``ask`` until it answers None."""
        asked: list[tuple[optuna.Trial, dict[str, float]]] = []
        while len(asked) < n and (one := self.ask()) is not None:
            asked.append(one)
        return asked

    def ask(self) -> tuple[optuna.Trial, dict[str, float]] | None:
        """A new trial and its full configuration, or None when the budget is spent or a stop was asked."""
        with self._lock:
            if not self._reserve():
                return None
            try:
                trial, read = self._new_trial()
            except Exception as exc:  # the sampler's before_trial, or the storage
                self._sampler_failed(None, exc)
                return None
        try:
            config = self._configure(trial, read)
        except Exception as exc:  # the sampler failed (a missing package, a bug): the stage cannot go on
            with self._lock:
                self._sampler_failed(trial, exc)
            return None
        return trial, config

    def _configure(self, trial: optuna.Trial, read: TrialsRead | None) -> dict[str, float]:
        """The sampler's suggestion for ``trial`` (this is where a sampler's own model runs); ``read``: the
        study's trials, read with the trial's creation, which answer the sampler's read."""
        n_hidden = self.spec.model.dropout_slots
        per_layer = bool(self.spec.search.space.dropout and self.spec.search.space.dropout.per_layer)
        with together(trial.storage, read):  # one write for the trial's parameters, not one each
            suggested = suggest(trial, self.spec, self.stage.params, known_off=off_is_known(self.spec, self.stage,
                                                                                            self.fixed))
        return Knobs.from_params({**self.fixed, **suggested}, n_hidden).as_params(per_layer)

    def _sampler_failed(self, trial: optuna.Trial | None, exc: Exception) -> None:
        """Record a trial the sampler could not configure as FAIL with the reason, and end the stage.

        Called with the lock held. Every later ask would fail the same way, so the stage stops here and
        says why instead of spending its attempts.
        """
        reason = (f"starting a trial failed (the {self.spec.search.sampler!r} sampler or the storage): {exc!r}"
                  if trial is None else f"the {self.spec.search.sampler!r} sampler failed: {exc!r}")
        log.error("stage %s: %s", self.stage.name, reason, exc_info=exc)
        self.in_flight -= 1
        self.attempts = self.max_attempts
        self.last_failure = reason
        self.cause = self.cause or exc  # the stage's error is raised from it: a runner can tell a database outage
        if trial is None:
            return
        try:
            fail_trial(trial.storage, trial._trial_id, reason)
            self.study.tell(trial.number, state=TrialState.FAIL)
        except Exception:  # the storage failed too: the next run marks the trial interrupted
            log.exception("could not record trial %d of stage %s as failed", trial.number, self.stage.name)

    def ask_fixed(self, params: dict[str, float], dists: dict[str, FloatDistribution]
                  ) -> tuple[optuna.Trial, dict[str, float]] | None:
        """A new trial with ``params`` set rather than sampled (a path point), and its full configuration."""
        with self._lock:
            if not self._reserve():
                return None
            try:
                trial, _ = self._new_trial(params)
            except Exception as exc:  # the storage
                self._sampler_failed(None, exc)
                return None
        with together(trial.storage):
            for name, dist in dists.items():  # enqueued values are fixed: the sampler is not asked
                trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        n_hidden = self.spec.model.dropout_slots
        per_layer = bool(self.spec.search.space.dropout and self.spec.search.space.dropout.per_layer)
        return trial, Knobs.from_params({**self.fixed, **params}, n_hidden).as_params(per_layer)

    def _new_trial(self, params: dict[str, float] | None = None) -> tuple[optuna.Trial, TrialsRead | None]:
        """The study's next trial (``params`` enqueued first), tagged with ``trial_attrs``, and the read of the
        study's trials made with it (``new_trial_reading``), if one was. Holds the lock.

        The tags say who runs it: a reclaimer fails only its own runner's trials.
        """
        read = None
        if params is not None:
            self.study.enqueue_trial(params)
            trial = self.study.ask()  # pops the trial just enqueued
        else:  # ``ask`` without its look for enqueued trials (a stage enqueues only above), without reading
            # back the trial it creates, and without dropping the thread's cached trials, which ``tell`` drops:
            # the sampler's search space is read from that cache (a stage's space is fixed) and its model from a
            # fresh read, made with the trial on PostgreSQL; three reads saved, four there
            # (the random sampler reads no trials: nothing is read ahead for it)
            trial, read = new_trial_reading(
                self.study, read=not isinstance(self.study.sampler, optuna.samplers.RandomSampler))
        if self.trial_attrs:
            set_attrs(trial, self.trial_attrs)
        return trial, read

    def abort(self, reason: str, *, holding: bool = True, cause: BaseException | None = None) -> None:
        """Stop handing out trials after an error the stage cannot go on from.

        Args:
            holding: the caller holds an asked trial it will not finish (False: it failed to ask for one).
            cause: the error; the stage's own error is raised from it (a caller can tell a database outage).
        """
        with self._lock:
            self.in_flight -= 1 if holding else 0
            self.attempts = self.max_attempts
            self.last_failure = reason
            self.cause = self.cause or cause

    def finish(self, trial: optuna.Trial | int, outcome: TrialOutcome) -> None:
        """Tell the study how a trial ended and update the budget."""
        frozen = tell(self.study, trial, outcome.values, outcome.state, outcome.unwritten)
        with self._lock:
            self.in_flight -= 1
            if outcome.state in BUDGET_STATES:
                self.done += 1
            elif outcome.reason:
                self.last_failure = outcome.reason
            self.cancelled = self.cancelled or outcome.cancelled
        if self.on_trial is not None:
            self.on_trial(frozen)


def _prior_trials(spec: JobSpec, stage: StageSpec, earlier: list[StageOutcome],
                  fixed: dict[str, float]) -> list[FrozenTrial]:
    """Earlier stages' finished trials, re-expressed in this stage's parameters."""
    prior: list[FrozenTrial] = []
    known_off = off_is_known(spec, stage, fixed)
    for outcome in earlier:
        for t in complete_trials(outcome.study):
            encoded = encode(t.user_attrs.get("config", {}), spec, stage.params, known_off)
            if encoded is None:
                continue
            params, dists = encoded
            prior.append(optuna.trial.create_trial(
                params=params, distributions=dists,
                values=objective_values(t.user_attrs, spec.search.objectives),
                user_attrs={"stage": t.user_attrs.get("stage"), "warm_start_from": outcome.study_name},
            ))
    return prior


def open_stage(spec: JobSpec, index: int, *, storage: optuna.storages.BaseStorage, study_name: str,
               earlier: list[StageOutcome], fixed: dict[str, float], fixed_by: dict[str, str],
               job: str) -> optuna.Study:
    """Create or load a stage's study, with its sampler warm-started.

    Raises:
        SpecError: the study exists and was run with a different spec (see ``check_fingerprint``).
    """
    stage = spec.stages[index]
    objectives = spec.search.objectives
    prior = _prior_trials(spec, stage, earlier, fixed) if stage.params and not stage.path else []
    grid = grid_space(spec, stage.params) if spec.search.sampler == "grid" and not stage.path else None
    sampler = make_sampler("random" if stage.path else spec.search.sampler, spec.seed + 1000 * index,
                           len(objectives) > 1, grid,  # a path's points are set, never sampled
                           constant_liar=spec.search.batch != 1)
    if prior and spec.search.sampler in WARM_STARTABLE:
        sampler = WarmStartSampler(sampler, prior)
    else:
        prior = []
    study = optuna.create_study(
        storage=storage, study_name=study_name, sampler=sampler, pruner=make_pruner(spec.search.pruner),
        directions=["minimize"] * len(objectives), load_if_exists=True,
    )
    check_fingerprint(study, spec, stage, fixed)
    attrs: dict[str, Any] = {
        "job": job, "stage": stage.name, "stage_index": index, "params": stage.params,
        "fixed": {k: v for k, v in fixed.items() if knob_of(k) not in stage.params}, "fixed_by": fixed_by,
        "objectives": objectives, "trials_budget": stage.trials, "warm_start_trials": len(prior),
        "earlier_studies": [e.study_name for e in earlier],
    }
    have = study.user_attrs  # one read, not one per key
    with together(study._storage):  # and one write
        for key, value in attrs.items():
            if have.get(key) != value:
                study.set_user_attr(key, value)
    if study.metric_names != objectives:
        study.set_metric_names(objectives)
    return study


def close_stage(run: StageRun, earlier: list[StageOutcome], study_name: str) -> StageOutcome:
    """Check the budget was met and pick the values this stage fixes for the next ones.

    The best is taken over this stage's trials and the earlier ones it was warmed
    with, so a knob that did not help is fixed at what it was before (0 for the baseline).

    Raises:
        Cancelled: a stop was asked while the stage ran.
        RegtuneError: too many trials failed to complete the budget.
    """
    if run.cancelled:
        raise Cancelled(f"stage {run.stage.name!r} stopped after {run.done} of {run.target} trials")
    own = complete_trials(run.study)
    if run.done < run.target or not own:
        why = run.last_failure or ("every judged trial was pruned, so none has a final value"
                                   if run.done >= run.target else "no trial said why")
        raise RegtuneError(f"stage {run.stage.name!r}: only {run.done} of {run.target} trials finished "
                           f"({len(own)} completed) after {run.attempts} attempts; last failure: {why}") from run.cause
    objectives = run.spec.search.objectives
    best_own = best_of(own, objectives)
    best_all = best_of(own + [t for e in earlier for t in complete_trials(e.study)], objectives)
    fixed: dict[str, float] = {}
    if best_all is not None:
        config = best_all.user_attrs.get("config", {})
        for key, value in config.items():
            if knob_of(key) in run.stage.params:
                fixed[key] = float(value)
    return StageOutcome(run.stage.name, study_name, run.study, len(own), best_own, fixed)
