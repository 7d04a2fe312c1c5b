"""Rules that span several parts of a spec (stages vs space, task vs knobs, sampler vs objective).

Checking only: nothing here changes the spec (completing it is ``complete_stages``'s part).
"""

from __future__ import annotations

import math

from tuner.devices import device_problem
from tuner.errors import Issue, SpecError
from tuner.plugins import load_factory
from tuner.spec._job import JobSpec
from tuner.spec._models import StageSpec
from tuner.spec._priors import KnobRange
from tuner.spec._stages import BASELINE, default_stages

__all__ = ["check_spec", "check_task", "grid_points", "unsearched_knobs"]


def _check_stages(stages: list[StageSpec], ranges: dict[str, KnobRange]) -> list[Issue]:
    issues: list[Issue] = []
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
    if stages and stages[0].params and not issues and BASELINE in seen:  # else complete_stages puts one first
        issues.append(Issue("search.stages", f"the stage named {BASELINE!r} must search nothing"))
    return issues


def _grid_size(spec: JobSpec, params: list[str]) -> tuple[int, list[str]]:
    size, missing = 1, []
    for p in params:
        rng = spec.search.space.ranges()[p]
        vals = rng.grid_values()
        if vals is None:
            missing.append(p)
            continue
        layers = spec.model.dropout_slots if (p == "dropout" and rng.per_layer) else 1
        size *= len(vals) ** layers
    return size, missing


def check_task(spec: JobSpec, task: str, why: str = "the dataset is a regression") -> list[Issue]:
    """The rules between the task and the search: label smoothing and val_error need a classification.

    Checked with the spec when the dataset names its task, and once the data is read when only the data
    tells (a CSV's target).

    Args:
        task: classification | regression.
        why: how the message says the task is a regression.

    Returns:
        The broken rules; empty when the task can run the search.
    """
    issues: list[Issue] = []
    if task == "regression" and spec.search.space.label_smoothing is not None:
        issues.append(Issue("search.space.label_smoothing", f"label smoothing needs a classification task, but {why}"))
    if task == "regression" and "val_error" in spec.search.objectives:
        issues.append(Issue("search.objective", f"val_error needs a classification task, but {why}; use val_loss"))
    return issues


def grid_points(spec: JobSpec, params: list[str]) -> int:
    """Points in a stage's grid over ``params``: the product of their grids, a per-layer knob once per layer.

    A knob without a finite grid counts 1 (``check_spec`` refuses it under the grid sampler).
    """
    return _grid_size(spec, params)[0]


def check_spec(spec: JobSpec) -> list[Issue]:
    """Check the rules between fields. Changes nothing.

    Returns:
        The broken rules, each once; empty when the spec may be completed and run.
    """
    search, space = spec.search, spec.search.space
    issues: list[Issue] = []
    if search.stages is None and not space.ranges():
        return [Issue("search.space", "name at least one knob to search (l1, l2, dropout, "
                      "input_dropout, label_smoothing), or give search.stages")]
    # as the user wrote them (field paths index into these), or the default ones
    given = list(search.stages) if search.stages is not None else default_stages(space)
    issues += _check_stages(given, space.ranges())
    if spec.task is not None:
        issues += check_task(spec, spec.task)
    if spec.model.kind == "linear" and space.dropout is not None:
        issues.append(Issue("search.space.dropout", "the linear model has no hidden layer to drop out; "
                            "use input_dropout"))
    if isinstance(search.batch, int) and search.batch > 1:
        if spec.model.batch_norm and spec.model.kind in ("mlp", "linear"):  # a cnn's are stacked per member
            issues.append(Issue("search.batch", f"batched trials of an mlp need model.batch_norm: false (batch "
                                f"statistics are per model), but got batch={search.batch}; use batch: 1 or auto",
                                search.batch))
        if spec.training.precision != "fp32" or spec.training.device not in ("auto", "cpu"):
            issues.append(Issue("search.batch", f"batched trials train in fp32 on the CPU, but got device "
                                f"{spec.training.device!r} and precision {spec.training.precision!r}; "
                                f"use batch: 1 or auto", search.batch))
        if spec.dataset.split.folds is not None:
            issues.append(Issue("search.batch", f"a cross-validated trial is {spec.dataset.split.folds} fits, "
                                f"trained one at a time, but got batch={search.batch}; use batch: 1 or auto",
                                search.batch))
    if spec.model.kind == "module" and spec.model.factory is not None:
        try:  # only the operator's models folder and entry points are looked at, never the name as a path
            load_factory(spec.model.factory)
        except SpecError as exc:
            issues += exc.issues
    if spec.model.kind in ("cnn", "module"):
        for i, stage in enumerate(given):
            if stage.path:  # λ_max is read off the first layer's input weights: an MLP's or a linear model's
                issues.append(Issue(f"search.stages[{i}].path", f"the L1 path needs model kind mlp or linear, "
                                    f"but the model is a {spec.model.kind}; give stage {stage.name!r} path: false"))
    if (problem := device_problem(spec.training.device, spec.training.precision)) is not None:
        issues.append(Issue(problem[0], problem[1], getattr(spec.training, problem[0].split(".")[1])))
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
            if stage.path:  # a path sets its own λ₁ values; the grid is not asked
                continue
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


def unsearched_knobs(spec: JobSpec) -> list[str]:
    """Knobs given a prior in ``search.space`` that no stage searches: they stay at 0 (off)."""
    searched = {p for stage in spec.search.stages or [] for p in stage.params}
    return [k for k in spec.search.space.ranges() if k not in searched]
