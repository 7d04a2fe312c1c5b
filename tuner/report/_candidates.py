"""The final choice: re-train the best few configurations over seeds, choose on the mean.

A single seed can make a configuration look better than it is. The top
configurations over every stage (a later stage need not improve on an earlier
one) and the baseline are trained again with other seeds; the choice is made
on the mean validation loss (``best``), or on the most regularized
configuration within one standard error of the best (``one_se``, glmnet's
lambda.1se). The standard error there combines the
spread over seeds with the sampling noise of the validation split itself
(differences smaller than that are not evidence).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from tuner.errors import Cancelled
from tuner.knobs import Knobs, knob_of
from tuner.search import objective_values
from tuner.spec import JobSpec
from tuner.train import Dataset, TrainResult, loss_standard_error, train, train_cv

__all__ = ["Candidate", "choose", "one_se_extras", "regularization_strength", "retrain_candidates", "top_configs"]


@dataclass
class Candidate:
    """One configuration, trained with several seeds. ``first`` is the run with the job's own seed."""

    stage: str
    trial: int | None
    config: dict[str, float]
    runs: list[TrainResult]
    val_se: float = 0.0  # standard error of the first run's val loss over the val examples

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
    def se(self) -> float:
        """Standard error of the mean val loss: seed spread and val-sample noise together."""
        return math.sqrt(self.std**2 / len(self.runs) + self.val_se**2)


def top_configs(spec: JobSpec, trials: list[FrozenTrial], k: int) -> list[FrozenTrial]:
    """The ``k`` best trials with distinct configurations, by the first objective."""
    ranked = sorted((t for t in trials if "val_loss" in t.user_attrs),
                    key=lambda t: objective_values(t.user_attrs, spec.search.objectives)[0])
    return _distinct(ranked, k)


def _distinct(trials: list[FrozenTrial], k: int) -> list[FrozenTrial]:
    """The first ``k`` trials with distinct configurations, in the given order."""
    seen: set[tuple[tuple[str, float], ...]] = set()
    out = []
    for t in trials:
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
    n_hidden = spec.model.dropout_slots
    out = []
    for stage, number, config in picks:
        runs = []
        for seed in seeds:
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled while re-training the final candidates")
            runs.append((train_cv if data.folds else train)(data, spec.model, spec.training,
                                                            Knobs.from_params(config, n_hidden), seed,
                                                            should_stop=should_stop))
        se = runs[0].val_loss_se  # cross-validation: the folds' spread
        if se is None:  # one val split: the sampling noise of its examples
            assert runs[0].model is not None
            se = loss_standard_error(runs[0].model, data.val, data.task)
        out.append(Candidate(stage, number, config, runs, se))
    return out


def regularization_strength(spec: JobSpec, config: dict[str, float]) -> float:
    """How strongly a configuration regularizes: each knob's position in its prior, summed.

    Off counts 0; on, a log-prior knob counts 0.5 at ``low`` up to 1 at ``high``
    (switching a knob on is already a step), a uniform one its fraction of the range.
    A log knob beyond ``high`` (an L1 path starts above the prior) keeps counting up.
    """
    total = 0.0
    for knob, rng in spec.search.space.ranges().items():
        values = [v for k, v in config.items() if knob_of(k) == knob]
        for v in values:
            if v <= 0.0:
                continue
            if rng.log:
                span = math.log(rng.high) - math.log(rng.low)
                pos = (math.log(v) - math.log(rng.low)) / span if span > 0 else 1.0
                total += (0.5 + 0.5 * max(pos, 0.0)) / len(values)
            else:
                span = rng.high - rng.low
                total += (min(max((v - rng.low) / span, 0.0), 1.0) if span > 0 else 1.0) / len(values)
    return total


def one_se_extras(spec: JobSpec, trials: list[FrozenTrial], candidates: list[Candidate], k: int
                  ) -> list[FrozenTrial]:
    """For ``one_se``: the ``k`` most regularized trials whose val loss is within one SE of the best candidate.

    The top trials by val loss crowd around the optimum; glmnet's rule looks
    along the whole path, so the strongest settings that are statistically
    as good are re-trained too.
    """
    best = min(candidates, key=lambda c: c.mean)
    bound = best.mean + best.se
    have = [c.config for c in candidates]
    within = [t for t in trials if "val_loss" in t.user_attrs and t.user_attrs["val_loss"] <= bound
              and t.user_attrs.get("config") not in have]
    within.sort(key=lambda t: regularization_strength(spec, t.user_attrs.get("config", {})), reverse=True)
    return _distinct(within, k)


def choose(spec: JobSpec, candidates: list[Candidate]) -> Candidate:
    """The candidate the report recommends (see the module docstring)."""
    best = min(candidates, key=lambda c: c.mean)
    if spec.report.choose == "best":
        return best
    bound = best.mean + best.se
    within = [c for c in candidates if c.mean <= bound]
    return max(within, key=lambda c: (regularization_strength(spec, c.config), -c.mean))
