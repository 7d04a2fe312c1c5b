"""What one job may cost: grid points, dataset cells, total work, parallelism, Ray.

A spec within every per-field bound can still ask for tens of GB (a grid of 1000
values on three knobs: Optuna's ``GridSampler`` builds the whole product) or for
days of training (seed re-runs and retries on top of the trials). These limits
bound the job as a whole. The service reads them from its settings
(``REGTUNE_MAX_*``) and checks them at submit; ``run_job`` checks them again
where the data is known (a CSV's shape only once it is read), so ``regtune run``
and every runner enforce the same rules.

Work is counted in parameter-steps: trainings × epochs × optimizer steps per
epoch × model parameters. Trainings are the worst case: every stage's whole
retry budget, and the final re-training of ``top_k`` candidates (twice over for
``choose: one_se``) with ``1 + seeds`` seeds each.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from tuner.errors import Issue, RegtuneError
from tuner.spec import JobSpec, grid_points

__all__ = ["LAMBDA_MAX_FITS", "Limits", "Work", "attempts_allowed", "check_limits", "check_work", "estimate_work"]

SKLEARN_OUTPUTS = {"digits": 10, "digits_images": 10, "breast_cancer": 2, "wine": 3, "iris": 3, "diabetes": 1}


LAMBDA_MAX_FITS = 16  # trainings an L1 path may spend finding its λ_max (outside its trials)


def attempts_allowed(trials: int) -> int:
    """Trials a stage may start to reach ``trials`` verdicts (failed trials are retried)."""
    return 4 * trials + 10


@dataclass(frozen=True)
class Limits:
    """The bounds one job must keep. Defaults suit one machine; operators set them per deployment.

    Attributes:
        max_grid_points: grid points of one stage under ``sampler: grid`` (the product over its knobs,
            a per-layer knob once per layer).
        max_cells: dataset rows × columns, checked at submit for generated data, at load for files.
        max_work: the work estimate's cap, in parameter-steps (see the module docstring).
        max_parallelism: trials at once on this machine; None means its CPU count.
        allow_ray: whether ``backend: ray`` may start or join a Ray cluster.
    """

    max_grid_points: int = 10_000
    max_cells: int = 10_000_000
    max_work: float = 1e11
    max_parallelism: int | None = None
    allow_ray: bool = True

    @property
    def parallelism(self) -> int:
        return self.max_parallelism or os.cpu_count() or 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The limits ``regtune run`` keeps: ``REGTUNE_MAX_GRID_POINTS``, ``REGTUNE_MAX_DATA_CELLS``,
        ``REGTUNE_MAX_WORK``, ``REGTUNE_MAX_PARALLELISM``, ``REGTUNE_ALLOW_RAY`` (default: allowed).

        Raises:
            RegtuneError: a variable that is not a positive number (or a boolean, for ALLOW_RAY).
        """
        env = os.environ if environ is None else environ
        base = cls()
        return cls(
            max_grid_points=int(_number(env, "REGTUNE_MAX_GRID_POINTS", base.max_grid_points, integer=True)),
            max_cells=int(_number(env, "REGTUNE_MAX_DATA_CELLS", base.max_cells, integer=True)),
            max_work=_number(env, "REGTUNE_MAX_WORK", base.max_work),
            max_parallelism=int(_number(env, "REGTUNE_MAX_PARALLELISM", 0, integer=True)) or None,
            allow_ray=_flag(env, "REGTUNE_ALLOW_RAY", base.allow_ray),
        )


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if not (math.isfinite(value) and value > 0):
        kind = "an integer" if integer else "a number"
        raise RegtuneError(f"The {name} environment variable must be {kind} > 0. Got {raw!r} instead.")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise RegtuneError(f"The {name} environment variable must be true or false. Got {raw!r} instead.")


@dataclass(frozen=True)
class Work:
    """A job's work estimate and its factors."""

    trainings: int
    epochs: int
    steps_per_epoch: int
    parameters: int

    @property
    def total(self) -> int:
        return self.trainings * self.epochs * self.steps_per_epoch * self.parameters

    def __str__(self) -> str:
        return (f"{self.trainings} trainings (retries and seed re-runs counted) × {self.epochs} epochs × "
                f"{self.steps_per_epoch} steps per epoch × {self.parameters} parameters = {self.total:.3g}")


def _parameters(spec: JobSpec, n_in: int, n_out: int) -> int:
    sizes = [n_in, *(spec.model.hidden or []), n_out]
    weights = sum(a * b + b for a, b in pairwise(sizes))
    norms = 2 * sum(spec.model.hidden or []) if spec.model.batch_norm else 0
    return weights + norms


def estimate_work(spec: JobSpec, *, rows: int, features: int, outputs: int, train_rows: int | None = None) -> Work:
    """The worst-case work of ``spec`` on data of this shape.

    Args:
        rows: rows in the whole dataset; ``train_rows`` (when known) those in the training split.
        features: input columns; ``outputs``: classes (classification) or 1 (regression).
    """
    if train_rows is None:
        split = spec.dataset.split
        kept = 1.0 if split.column is not None else 1.0 - (split.val or 0.0) - (split.test or 0.0)
        train_rows = max(1, math.ceil(rows * kept))
    searches = sum(attempts_allowed(stage.trials) for stage in spec.stages)
    candidates = 1 + spec.report.top_k * (2 if spec.report.choose == "one_se" else 1) + (
        1 if any(stage.path for stage in spec.stages) else 0)  # the path's own one-SE point
    reruns = candidates * (1 + spec.report.seeds)
    folds = spec.dataset.split.folds or 1  # a cross-validated training trains every fold
    extra = LAMBDA_MAX_FITS * sum(bool(stage.path) for stage in spec.stages) + (2 if folds > 1 else 0)  # refits
    return Work(trainings=(searches + reruns) * folds + extra, epochs=spec.training.epochs,
                steps_per_epoch=math.ceil(train_rows / spec.training.batch_size),
                parameters=_parameters(spec, features, outputs))


def _known_shape(spec: JobSpec) -> tuple[int, int, int] | None:
    ds = spec.dataset
    shape = ds.known_shape
    if shape is None:
        return None
    if ds.source == "sklearn":
        return (*shape, SKLEARN_OUTPUTS[ds.name or ""])
    return (*shape, ds.n_classes or 1)


def check_work(spec: JobSpec, work: Work, limits: Limits, setting: str = "REGTUNE_MAX_WORK") -> list[Issue]:
    """The issue when ``work`` is over ``limits.max_work``; none otherwise."""
    if work.total <= limits.max_work:
        return []
    return [Issue("training", f"the job's work estimate is {work}, but at most {limits.max_work:.3g} "
                  f"parameter-steps are allowed ({setting}); lower search.stages[].trials, training.epochs, "
                  "report.top_k or report.seeds, shrink model.hidden, or raise training.batch_size", work.total)]


def cells_issue(rows: int, columns: int, limits: Limits, field: str = "dataset") -> Issue | None:
    """The issue when a dataset of ``rows`` × ``columns`` is over ``limits.max_cells``."""
    if rows * columns <= limits.max_cells:
        return None
    return Issue(field, f"the dataset holds {rows} rows × {columns} columns = {rows * columns} cells, but at most "
                 f"{limits.max_cells} are allowed (REGTUNE_MAX_DATA_CELLS)", rows * columns)


def check_limits(spec: JobSpec, limits: Limits) -> list[Issue]:
    """Every limit a spec can be checked against before its data is read.

    Returns:
        The broken limits, each naming its field and the setting that sets it.
    """
    issues: list[Issue] = []
    search = spec.search
    if search.sampler == "grid":
        for stage in spec.stages:  # no index: a baseline the user did not write may come first
            points = grid_points(spec, stage.params)
            if points > limits.max_grid_points:
                issues.append(Issue("search.stages", f"stage {stage.name!r} spans a grid of {points} "
                                    f"points, but at most {limits.max_grid_points} are allowed per stage "
                                    "(REGTUNE_MAX_GRID_POINTS); give its knobs fewer grid values", points))
    if search.backend == "ray" and not limits.allow_ray:
        issues.append(Issue("search.backend", "backend 'ray' is not allowed here (REGTUNE_ALLOW_RAY is off); "
                            "use backend 'optuna'", "ray"))
    if search.backend == "optuna" and search.parallelism > limits.parallelism:
        issues.append(Issue("search.parallelism", f"must be <= {limits.parallelism}, the CPU cores of this "
                            f"runner (REGTUNE_MAX_PARALLELISM), but got {search.parallelism}", search.parallelism))
    shape = _known_shape(spec)
    if shape is not None:
        rows, features, outputs = shape
        if (cells := cells_issue(rows, features + 1, limits)) is not None:
            field = "dataset.n_samples" if spec.dataset.source == "synthetic" else "dataset"
            issues.append(Issue(field, cells.message, cells.value))
        else:
            issues += check_work(spec, estimate_work(spec, rows=rows, features=features, outputs=outputs), limits)
    return issues
