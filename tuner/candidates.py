"""The final choice: re-train the best few configurations over seeds, choose on the mean.

A single seed can make a configuration look better than it is. The top
configurations of the last stage and the baseline are trained again with
other seeds; the choice is made on the mean validation loss (``best``), or on
the most regularized configuration within one standard error of the best
(``one_se``, glmnet's lambda.1se).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from tuner.data import Dataset
from tuner.errors import Cancelled
from tuner.knobs import Knobs
from tuner.spec import JobSpec
from tuner.training import TrainResult, train
from tuner.trial import objective_values

__all__ = ["Candidate", "choose", "regularization_strength", "retrain_candidates", "top_configs"]


@dataclass
class Candidate:
    """One configuration, trained with several seeds. ``first`` is the run with the job's own seed."""

    stage: str
    trial: int | None
    config: dict[str, float]
    runs: list[TrainResult]

    @property
    def first(self) -> TrainResult:
        return self.runs[0]

    @property
    def val_losses(self) -> list[float]:
        return [r.val_loss for r in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.val_losses)

    @property
    def std(self) -> float:
        return statistics.stdev(self.val_losses) if len(self.runs) > 1 else 0.0

    @property
    def sem(self) -> float:
        return self.std / math.sqrt(len(self.runs))


def top_configs(spec: JobSpec, trials: list[FrozenTrial], k: int) -> list[FrozenTrial]:
    """The ``k`` best trials with distinct configurations, by the first objective."""
    ranked = sorted((t for t in trials if "val_loss" in t.user_attrs),
                    key=lambda t: objective_values(t.user_attrs, spec.search.objectives)[0])
    seen: set[tuple[tuple[str, float], ...]] = set()
    out = []
    for t in ranked:
        key = tuple(sorted(t.user_attrs.get("config", {}).items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
        if len(out) == k:
            break
    return out


def retrain_candidates(spec: JobSpec, data: Dataset, picks: list[tuple[str, int | None, dict[str, float]]],
                       should_stop: Callable[[], bool] | None = None) -> list[Candidate]:
    """Train each (stage, trial, config) with the job's seed and ``report.seeds`` others."""
    seeds = [spec.seed] + [spec.seed + 1 + i for i in range(spec.report.seeds)]
    n_hidden = len(spec.model.hidden or [])
    out = []
    for stage, number, config in picks:
        runs = []
        for seed in seeds:
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled while re-training the final candidates")
            runs.append(train(data, spec.model, spec.training, Knobs.from_params(config, n_hidden), seed))
        out.append(Candidate(stage, number, config, runs))
    return out


def regularization_strength(spec: JobSpec, config: dict[str, float]) -> float:
    """How strongly a configuration regularizes: each knob's position in its prior, summed.

    Off counts 0; on, a log-prior knob counts 0.5 at ``low`` up to 1 at ``high``
    (switching a knob on is already a step), a uniform one its fraction of the range.
    """
    total = 0.0
    for knob, rng in spec.search.space.ranges().items():
        values = [v for k, v in config.items() if k == knob or (knob == "dropout" and k.startswith("dropout_"))]
        for v in values:
            if v <= 0.0:
                continue
            if rng.log:
                span = math.log(rng.high) - math.log(rng.low)
                pos = (math.log(v) - math.log(rng.low)) / span if span > 0 else 1.0
                total += (0.5 + 0.5 * min(max(pos, 0.0), 1.0)) / len(values)
            else:
                span = rng.high - rng.low
                total += (min(max((v - rng.low) / span, 0.0), 1.0) if span > 0 else 1.0) / len(values)
    return total


def choose(spec: JobSpec, candidates: list[Candidate]) -> Candidate:
    """The candidate the report recommends (see the module docstring)."""
    best = min(candidates, key=lambda c: c.mean)
    if spec.report.choose == "best":
        return best
    bound = best.mean + best.sem
    within = [c for c in candidates if c.mean <= bound]
    return max(within, key=lambda c: (regularization_strength(spec, c.config), -c.mean))
