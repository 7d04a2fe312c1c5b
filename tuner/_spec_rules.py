"""Rules that span several parts of a spec (stages vs space, task vs knobs, sampler vs objective)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tuner.errors import Issue

if TYPE_CHECKING:
    from tuner.spec import JobSpec

BASELINE = "baseline"


def _default_stages(spec: JobSpec) -> None:
    from tuner.spec import StageSpec

    knobs = list(spec.search.space.ranges())
    stages = [StageSpec(name=BASELINE, params=[], trials=1)]
    if knobs:
        stages.append(StageSpec(name="joint", params=knobs, trials=30))
    spec.search.stages = stages


def _check_stages(spec: JobSpec) -> list[Issue]:
    from tuner.spec import StageSpec

    issues: list[Issue] = []
    stages = spec.search.stages or []
    ranges = spec.search.space.ranges()
    seen: set[str] = set()
    for i, stage in enumerate(stages):
        where = f"search.stages[{i}]"
        if stage.name in seen:
            issues.append(Issue(f"{where}.name", f"stage names must be unique, but {stage.name!r} repeats"))
        seen.add(stage.name)
        if len(set(stage.params)) != len(stage.params):
            issues.append(Issue(f"{where}.params", f"a parameter is named twice: {stage.params}"))
        for p in stage.params:
            if p not in ranges:
                valid = ", ".join(ranges) or "none (search.space is empty)"
                issues.append(Issue(
                    f"{where}.params",
                    f"stage {stage.name!r} names {p!r}, which is not in search.space; searched knobs: {valid}",
                    p,
                ))
        if not stage.params and i > 0:
            issues.append(Issue(f"{where}.params", f"only the first stage may search nothing, but stage "
                                f"{stage.name!r} (number {i}) has no params"))
    if stages and stages[0].params and not issues:
        if BASELINE in seen:
            issues.append(Issue("search.stages", f"the stage named {BASELINE!r} must search nothing"))
        else:  # a baseline always runs first: it answers "is there overfitting at all?"
            spec.search.stages = [StageSpec(name=BASELINE, params=[], trials=1), *stages]
    return issues


def _grid_size(spec: JobSpec, params: list[str]) -> tuple[int, list[str]]:
    size, missing = 1, []
    for p in params:
        rng = spec.search.space.ranges()[p]
        vals = rng.grid_values()
        if vals is None:
            missing.append(p)
            continue
        layers = len(spec.model.hidden or []) if (p == "dropout" and rng.per_layer) else 1
        size *= len(vals) ** layers
    return size, missing


def cross_check(spec: JobSpec) -> list[Issue]:
    """Check the rules between fields; fill in the default stages. Returns the broken rules."""
    search, space = spec.search, spec.search.space
    issues: list[Issue] = []
    if search.stages is None:
        if not space.ranges():
            return [Issue("search.space", "name at least one knob to search (l1, l2, dropout, "
                          "input_dropout, label_smoothing), or give search.stages")]
        _default_stages(spec)
    given = list(spec.search.stages or [])  # as the user wrote them: field paths index into these
    issues += _check_stages(spec)
    task = spec.task
    if task == "regression" and space.label_smoothing is not None:
        issues.append(Issue("search.space.label_smoothing",
                            "label smoothing needs a classification task, but the dataset is a regression"))
    if task == "regression" and "val_error" in search.objectives:
        issues.append(Issue("search.objective", "val_error needs a classification task, but the dataset "
                            "is a regression; use val_loss"))
    if spec.model.kind == "linear" and space.dropout is not None:
        issues.append(Issue("search.space.dropout", "the linear model has no hidden layer to drop out; "
                            "use input_dropout"))
    if isinstance(search.batch, int) and search.batch > 1:
        if spec.model.batch_norm:
            issues.append(Issue("search.batch", f"batched trials need model.batch_norm: false (batch statistics "
                                f"are per model), but got batch={search.batch}; use batch: 1 or auto",
                                search.batch))
        if search.backend != "optuna":
            issues.append(Issue("search.batch", f"the {search.backend} backend trains one trial at a time, but "
                                f"got batch={search.batch}; use batch: 1 or auto", search.batch))
    multi = len(search.objectives) > 1
    if multi and search.sampler == "cmaes":
        issues.append(Issue("search.sampler", "cmaes optimizes one objective only; for a Pareto "
                            "objective use nsga2, tpe, gp, random, qmc or grid", "cmaes"))
    if multi and search.pruner != "none":
        issues.append(Issue("search.pruner", f"pruning needs a single objective, but got pruner "
                            f"{search.pruner!r} with objective {search.objective}; use pruner: none",
                            search.pruner))
    if search.sampler == "grid" and not issues:
        for i, stage in enumerate(given):
            size, missing = _grid_size(spec, stage.params)
            for p in missing:
                issues.append(Issue(f"search.space.{p}", f"the grid sampler needs a finite grid: give "
                                    f"'grid' (a number of points) or 'values' for {p!r}"))
            if not missing and stage.trials > size:
                issues.append(Issue(f"search.stages[{i}].trials", f"stage {stage.name!r} asks "
                                    f"{stage.trials} trials but its grid has {size} points",
                                    stage.trials))
    for name, rng in space.ranges().items():
        if rng.log and rng.high / rng.low > 1e12:
            issues.append(Issue(f"search.space.{name}", f"a log prior spanning more than 12 decades is "
                                f"no prior, but got [{rng.low}, {rng.high}]"))
        if not math.isfinite(rng.high):
            issues.append(Issue(f"search.space.{name}.high", "must be finite", rng.high))
    return list(dict.fromkeys(issues))  # a rule broken in several stages is reported once
