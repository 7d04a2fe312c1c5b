"""Samplers and pruners chosen by name, and warm starting a stage from earlier stages' trials.

Warm starting: a stage's sampler sees the earlier stages' trials (re-expressed in
this stage's parameters) beside its own, so it starts informed instead of cold.
The earlier trials are not written into the stage's study: its trials stay the
ones it ran, so its budget and the dashboard count only those.
"""

from __future__ import annotations

import warnings
from collections.abc import Container, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from tuner.registry import PRUNERS, SAMPLERS

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

__all__ = ["PRUNERS", "SAMPLERS", "WARM_STARTABLE", "WarmStartSampler", "make_pruner", "make_sampler"]

Grid = Mapping[str, Sequence[Any]] | None
"""The stage's grid (knob → values) for the grid sampler; None for the others."""


# The factories the registries (``tuner.registry.SAMPLERS`` and ``PRUNERS``) name.

def grid_sampler(seed: int, multi: bool, grid: Grid, constant_liar: bool = False) -> BaseSampler:
    return _StageGridSampler(dict(grid or {}), seed=seed)


def random_sampler(seed: int, multi: bool, grid: Grid, constant_liar: bool = False) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def tpe_sampler(seed: int, multi: bool, grid: Grid, constant_liar: bool = False) -> BaseSampler:
    # multivariate + group: the knobs interact, and allow_zero knobs make conditional parameters;
    # constant_liar: trials asked together (a batch) are spread out instead of proposed alike
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, group=True,
                                      constant_liar=constant_liar)


def gp_sampler(seed: int, multi: bool, grid: Grid, constant_liar: bool = False) -> BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)


def cmaes_sampler(seed: int, multi: bool, grid: Grid, constant_liar: bool = False) -> BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=3)


def qmc_sampler(seed: int, multi: bool, grid: Grid, constant_liar: bool = False) -> BaseSampler:
    return optuna.samplers.QMCSampler(seed=seed)


def nsga2_sampler(seed: int, multi: bool, grid: Grid, constant_liar: bool = False) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)


MEDIAN_STARTUP_TRIALS = 3
"""Completed trials the median pruner waits for before it prunes anything."""


def median_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=3)


def pruner_startup(name: str) -> int | None:
    """How many trials must be done before the pruner ``name`` prunes against them; None when it needs none
    (no pruner) or keeps its own rungs (hyperband)."""
    return MEDIAN_STARTUP_TRIALS if name == "median" else None


def hyperband_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=2)


WARM_STARTABLE = frozenset({"tpe", "gp"})
"""Samplers whose model reads the study's finished trials and so benefits from earlier stages."""


class _StageGridSampler(optuna.samplers.GridSampler):
    """A grid sampler that leaves the end of the stage to the stage's budget.

    Optuna's own calls ``study.stop()`` once the grid is used up, which only works
    inside ``study.optimize``; a stage asks and tells, and the spec already
    guarantees the budget fits the grid.
    """

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        return None


def make_sampler(name: str, seed: int, multi_objective: bool, grid: Grid = None, *,
                 constant_liar: bool = False) -> BaseSampler:
    """The sampler called ``name`` (``grid``: over the stage's ``grid``).

    Args:
        constant_liar: TPE only: treat running trials as done with a poor value (trials asked in batches).

    Raises:
        ValueError: an unknown name (the message lists every valid one).
    """
    return SAMPLERS.load(name)(seed, multi_objective, grid, constant_liar)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner called ``name``.

    Raises:
        ValueError: an unknown name (the message lists every valid one).
    """
    return PRUNERS.load(name)()


class _StudyView:
    """A study as a sampler should see it: the earlier stages' trials, then its own."""

    def __init__(self, study: optuna.Study, prior: list[FrozenTrial]) -> None:
        self._study = study
        self._prior = prior

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        own = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in self._prior if states is None or t.state in states] + own

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class WarmStartSampler(BaseSampler):
    """Wraps a sampler so that it also learns from ``prior`` trials that live outside the study."""

    def __init__(self, base: BaseSampler, prior: list[FrozenTrial]) -> None:
        self._base = base
        self._prior = prior

    def _view(self, study: optuna.Study) -> optuna.Study:
        return _StudyView(study, self._prior)  # type: ignore[return-value]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._base.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._base.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._base.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._base.reseed_rng()
