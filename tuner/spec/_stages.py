"""The stages a spec runs: the ones it gives, or the default ones, with a baseline always first.

Completing a spec is a step of its own, taken once the spec breaks no rule
(``check_spec``); these functions only compute, they change nothing.
"""

from __future__ import annotations

from tuner.spec._models import SearchSpec, StageSpec
from tuner.spec._priors import Space

__all__ = ["BASELINE", "complete_stages", "default_stages"]

BASELINE = "baseline"


def default_stages(space: Space) -> list[StageSpec]:
    """A baseline, then one joint stage over every knob in ``space`` (when it names any)."""
    knobs = list(space.ranges())
    stages = [StageSpec(name=BASELINE, params=[], trials=1)]
    if knobs:
        stages.append(StageSpec(name="joint", params=knobs, trials=30))
    return stages


def complete_stages(search: SearchSpec) -> list[StageSpec]:
    """The stages in the order they run: those given (or the default ones), a baseline put first if missing."""
    if search.stages is None:
        return default_stages(search.space)
    if search.stages and search.stages[0].params:  # a baseline always runs first: is there overfitting at all?
        return [StageSpec(name=BASELINE, params=[], trials=1), *search.stages]
    return search.stages
