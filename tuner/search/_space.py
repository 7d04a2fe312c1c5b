"""From a spec's knob ranges to Optuna parameters, and back.

A knob with ``allow_zero`` is two parameters: ``<knob>_on`` (off means exactly 0)
and, when on, ``<knob>`` on its (log-)uniform prior. Per-layer dropout is one
parameter per hidden layer, ``dropout_0``, ``dropout_1``, …. On a grid, a knob is a
categorical over its grid values (0 included when allowed).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from tuner.spec import JobSpec, KnobRange, StageSpec

__all__ = ["encode", "grid_space", "knob_names", "off_is_known", "suggest"]


def knob_names(knob: str, rng: KnobRange, n_hidden: int) -> list[str]:
    """The flat parameter names a knob expands to (one per hidden layer for per-layer dropout)."""
    if knob == "dropout" and rng.per_layer:
        return [f"dropout_{i}" for i in range(n_hidden)]
    return [knob]


def _distributions(rng: KnobRange, grid: bool) -> tuple[BaseDistribution, BaseDistribution | None]:
    """(value distribution, on/off distribution or None)."""
    if grid:
        return CategoricalDistribution(rng.grid_values() or []), None
    dist = FloatDistribution(rng.low, rng.high, log=rng.log)
    return dist, (CategoricalDistribution([False, True]) if rng.allow_zero else None)


def _ask(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, CategoricalDistribution)
    return trial.suggest_categorical(name, dist.choices)


def off_is_known(spec: JobSpec, stage: StageSpec, fixed: dict[str, float]) -> frozenset[str]:
    """The stage's ``allow_zero`` knobs whose "off" setting is a configuration already run.

    In a stage that searches one knob which the earlier stages left at 0, switching it off
    gives back the configuration those stages fixed: their best trial, already trained and
    weighed in the stage's choice (``close_stage`` picks over earlier trials too). Asking
    for it again would only spend the budget on a copy, so such a stage searches the "on"
    range alone. A grid keeps its 0 point: the spec sized the budget to the whole grid.
    """
    if len(stage.params) != 1 or spec.search.sampler == "grid" or stage.path:
        return frozenset()
    knob = stage.params[0]
    rng = spec.search.space.ranges()[knob]
    names = knob_names(knob, rng, spec.model.dropout_slots)
    if rng.allow_zero and all(fixed.get(n, fixed.get(knob, 0.0)) == 0.0 for n in names):
        return frozenset({knob})
    return frozenset()


def suggest(trial: optuna.Trial, spec: JobSpec, params: list[str],
            known_off: frozenset[str] = frozenset()) -> dict[str, float]:
    """Ask the trial for every knob of a stage. Returns flat knob values, 0 for a knob switched off.

    Args:
        known_off: knobs whose "off" setting is not asked (see ``off_is_known``).
    """
    grid, n_hidden = spec.search.sampler == "grid", spec.model.dropout_slots
    out: dict[str, float] = {}
    for knob in params:
        rng = spec.search.space.ranges()[knob]
        value_dist, on_dist = _distributions(rng, grid)
        if knob in known_off:
            on_dist = None
        for name in knob_names(knob, rng, n_hidden):
            if on_dist is not None and not _ask(trial, f"{name}_on", on_dist):
                out[name] = 0.0
            else:
                out[name] = float(_ask(trial, name, value_dist))
    return out


def _holds(dist: BaseDistribution, v: float) -> bool:
    if isinstance(dist, FloatDistribution):
        return dist.low <= v <= dist.high
    assert isinstance(dist, CategoricalDistribution)
    return v in dist.choices


def encode(config: dict[str, float], spec: JobSpec, params: list[str],
           known_off: frozenset[str] = frozenset()) -> tuple[dict[str, Any], dict[str, BaseDistribution]] | None:
    """A trained configuration as this stage's Optuna params; None if the stage's priors cannot hold it."""
    grid, n_hidden = spec.search.sampler == "grid", spec.model.dropout_slots
    values: dict[str, Any] = {}
    dists: dict[str, BaseDistribution] = {}
    for knob in params:
        rng = spec.search.space.ranges()[knob]
        value_dist, on_dist = _distributions(rng, grid)
        if knob in known_off:
            on_dist = None
        for name in knob_names(knob, rng, n_hidden):
            v = float(config.get(name, config.get(knob, 0.0)))
            if on_dist is not None:
                values[f"{name}_on"], dists[f"{name}_on"] = v != 0.0, on_dist
                if v == 0.0:
                    continue
            if not _holds(value_dist, v):
                return None
            values[name], dists[name] = v, value_dist
    return values, dists


def grid_space(spec: JobSpec, params: list[str]) -> dict[str, list[Any]]:
    """The GridSampler search space of a stage."""
    n_hidden = spec.model.dropout_slots
    out: dict[str, list[Any]] = {}
    for knob in params:
        rng = spec.search.space.ranges()[knob]
        for name in knob_names(knob, rng, n_hidden):
            out[name] = list(rng.grid_values() or [])
    return out
