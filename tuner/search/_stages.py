"""Stages: one Optuna study each, earlier stages' best values fixed, their trials warming the sampler.

A stage's budget is its number of trials that reached a verdict: COMPLETE, or
PRUNED (a pruned trial was judged; counting only survivors would raise the
pruner's bar with every trial). FAILED trials (a NaN loss, a crash, an
interruption) are retried and do not count. Running a stage again
against the same storage resumes it: trials left RUNNING by a killed process are
marked failed (``interrupted``), completed ones count, a finished stage is skipped.
"""

from __future__ import annotations

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
from tuner.search._samplers import WARM_STARTABLE, WarmStartSampler, make_pruner, make_sampler
from tuner.search._space import encode, grid_space, suggest
from tuner.search._trial import TrialOutcome, objective_values
from tuner.spec import JobSpec, StageSpec

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


def fail_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """Mark trials left RUNNING by a process that died as FAIL with ``interrupted: true``."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_user_attr(t._trial_id, "fail_reason", "the process running it stopped")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(stale)


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
    in_flight: int = 0
    attempts: int = 0
    last_failure: str | None = None
    cancelled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def max_attempts(self) -> int:
        return attempts_allowed(self.target)

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

    def ask(self) -> tuple[optuna.Trial, dict[str, float]] | None:
        """A new trial and its full configuration, or None when the budget is spent or a stop was asked."""
        with self._lock:
            if not self._reserve():
                return None
            trial = self.study.ask()
        n_hidden = len(self.spec.model.hidden or [])
        per_layer = bool(self.spec.search.space.dropout and self.spec.search.space.dropout.per_layer)
        config = Knobs.from_params({**self.fixed, **suggest(trial, self.spec, self.stage.params)},
                                   n_hidden).as_params(per_layer)
        return trial, config

    def ask_fixed(self, params: dict[str, float], dists: dict[str, FloatDistribution]
                  ) -> tuple[optuna.Trial, dict[str, float]] | None:
        """A new trial with ``params`` set rather than sampled (a path point), and its full configuration."""
        with self._lock:
            if not self._reserve():
                return None
            self.study.enqueue_trial(params)
            trial = self.study.ask()
        for name, dist in dists.items():  # enqueued values are fixed: the sampler is not asked
            trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        n_hidden = len(self.spec.model.hidden or [])
        per_layer = bool(self.spec.search.space.dropout and self.spec.search.space.dropout.per_layer)
        return trial, Knobs.from_params({**self.fixed, **params}, n_hidden).as_params(per_layer)

    def abort(self, reason: str) -> None:
        """Stop handing out trials after an error the stage cannot go on from."""
        with self._lock:
            self.in_flight -= 1
            self.attempts = self.max_attempts
            self.last_failure = reason

    def finish(self, trial: optuna.Trial | int, outcome: TrialOutcome) -> None:
        """Tell the study how a trial ended and update the budget."""
        number = trial if isinstance(trial, int) else trial.number
        frozen = self.study.tell(number, outcome.values, state=outcome.state)
        with self._lock:
            self.in_flight -= 1
            if outcome.state in BUDGET_STATES:
                self.done += 1
            elif outcome.reason:
                self.last_failure = outcome.reason
            self.cancelled = self.cancelled or outcome.cancelled
        if self.on_trial is not None:
            self.on_trial(frozen)


def _prior_trials(spec: JobSpec, stage: StageSpec, earlier: list[StageOutcome]) -> list[FrozenTrial]:
    """Earlier stages' finished trials, re-expressed in this stage's parameters."""
    prior: list[FrozenTrial] = []
    for outcome in earlier:
        for t in complete_trials(outcome.study):
            encoded = encode(t.user_attrs.get("config", {}), spec, stage.params)
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
    """Create or load a stage's study, with its sampler warm-started."""
    stage = spec.stages[index]
    objectives = spec.search.objectives
    prior = _prior_trials(spec, stage, earlier) if stage.params and not stage.path else []
    grid = grid_space(spec, stage.params) if spec.search.sampler == "grid" and not stage.path else None
    sampler = make_sampler("random" if stage.path else spec.search.sampler, spec.seed + 1000 * index,
                           len(objectives) > 1, grid)  # a path's points are set, never sampled
    if prior and spec.search.sampler in WARM_STARTABLE:
        sampler = WarmStartSampler(sampler, prior)
    else:
        prior = []
    study = optuna.create_study(
        storage=storage, study_name=study_name, sampler=sampler, pruner=make_pruner(spec.search.pruner),
        directions=["minimize"] * len(objectives), load_if_exists=True,
    )
    attrs: dict[str, Any] = {
        "job": job, "stage": stage.name, "stage_index": index, "params": stage.params,
        "fixed": {k: v for k, v in fixed.items() if knob_of(k) not in stage.params}, "fixed_by": fixed_by,
        "objectives": objectives, "trials_budget": stage.trials, "warm_start_trials": len(prior),
        "earlier_studies": [e.study_name for e in earlier],
    }
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
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
        raise RegtuneError(f"stage {run.stage.name!r}: only {run.done} of {run.target} trials finished "
                           f"({len(own)} completed) after {run.attempts} attempts; last failure: {run.last_failure}")
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
