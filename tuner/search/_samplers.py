"""Samplers and pruners chosen by name, and warm starting a stage from earlier stages' trials.

Warm starting: a stage's sampler sees the earlier stages' trials (re-expressed in
this stage's parameters) beside its own, so it starts informed instead of cold.
The earlier trials are not written into the stage's study: its trials stay the
ones it ran, so its budget and the dashboard count only those.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

__all__ = ["PRUNERS", "SAMPLERS", "WARM_STARTABLE", "WarmStartSampler", "make_pruner", "make_sampler"]


def _tpe(seed: int, multi: bool) -> BaseSampler:
    # multivariate + group: the knobs interact, and allow_zero knobs make conditional parameters
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, group=True)


SAMPLERS: dict[str, Callable[[int, bool], BaseSampler]] = {
    "random": lambda seed, multi: optuna.samplers.RandomSampler(seed=seed),
    "tpe": _tpe,
    "gp": lambda seed, multi: optuna.samplers.GPSampler(seed=seed, n_startup_trials=5),
    "cmaes": lambda seed, multi: optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=3),
    "qmc": lambda seed, multi: optuna.samplers.QMCSampler(seed=seed),
    "nsga2": lambda seed, multi: optuna.samplers.NSGAIISampler(seed=seed, population_size=8),
}
"""Every sampler but grid, which needs its grid (see ``make_sampler``)."""

WARM_STARTABLE = frozenset({"tpe", "gp"})
"""Samplers whose model reads the study's finished trials and so benefits from earlier stages."""

PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=2),
}


class _StageGridSampler(optuna.samplers.GridSampler):
    """A grid sampler that leaves the end of the stage to the stage's budget.

    Optuna's own calls ``study.stop()`` once the grid is used up, which only works
    inside ``study.optimize``; a stage asks and tells, and the spec already
    guarantees the budget fits the grid.
    """

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        return None


def make_sampler(name: str, seed: int, multi_objective: bool,
                 grid: Mapping[str, Sequence[Any]] | None = None) -> BaseSampler:
    """The sampler called ``name``.

    Raises:
        ValueError: an unknown name (the message lists every valid one).
    """
    if name == "grid":
        return _StageGridSampler(dict(grid or {}), seed=seed)
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers are: grid, {', '.join(SAMPLERS)}")
    return SAMPLERS[name](seed, multi_objective)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; valid pruners are: {', '.join(PRUNERS)}")
    return PRUNERS[name]()


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
