"""The L1 path: λ₁ walked down from the value that removes every input, each point warm-started.

A sampler that hunts the lowest val loss crowds around it and never visits the
sparse models within one standard error of it; glmnet finds those by walking
the path. A path stage starts at λ_max, the smallest λ₁ at which training keeps
no input column, and steps down a geometric sequence to λ_max·ε. Each point is
one Optuna trial, trained from the previous point's weights (the first from the
null model: input weights zero, bias fitted), so the path is cheap and smooth.

λ_max for a linear model comes from the gradient at zero. The training loop
applies L1 as a proximal step after the optimizer's step, so a weight at zero
stays there exactly when the optimizer's step on it is smaller than its
threshold: with Adam (per-weight step size, the same in both) when |gradient| ≤ λ₁;
with SGD and momentum μ the momentum buffer grows to gradient/(1−μ), so λ_max is
that much larger. The value is then checked by a fit (and found by bisection
when the check fails, or for an MLP, where the gradient is only a first guess).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import replace
from typing import Any

import torch
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.knobs import Knobs
from tuner.limits import LAMBDA_MAX_FITS
from tuner.search._stages import StageRun
from tuner.search._trial import run_trial
from tuner.spec import JobSpec
from tuner.train import Dataset, build_model, plain_loss, split_chunks, train

__all__ = ["find_lambda_max", "gradient_lambda_max", "null_state", "one_se_point", "path_summary", "path_values",
           "run_path"]

log = logging.getLogger(__name__)

BISECT_TOLERANCE = 1.02  # λ_max is found to within 2 %
ROUNDING = 1e-3  # float32 sums in another order: a gradient equal to λ₁ may round either way
MAX_FITS = LAMBDA_MAX_FITS  # counted in the job's work estimate (tuner.limits)


def path_values(lambda_max: float, eps: float, points: int) -> list[float]:
    """``points`` values from ``lambda_max`` down to ``lambda_max * eps``, evenly spaced on a log axis."""
    return [lambda_max * eps ** (i / (points - 1)) for i in range(points)]


def null_state(spec: JobSpec, data: Dataset, knobs: Knobs, seed: int) -> dict[str, torch.Tensor]:
    """The model with every input weight zero and, for a linear model, the bias that fits the target alone."""
    model = build_model(spec.model, data.n_features, data.n_outputs, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.linears[0].weight.zero_()
        if not spec.model.hidden:
            model.out.bias.copy_(_intercept(data, knobs))
    return copy.deepcopy(model.state_dict())


def _intercept(data: Dataset, knobs: Knobs) -> torch.Tensor:
    """The bias minimizing the training loss of a model that ignores its inputs."""
    y = data.train.y
    if data.task == "regression":
        return y.float().mean().reshape(1)
    prior = torch.bincount(y, minlength=data.n_outputs).double() / len(y)
    smoothed = (1.0 - knobs.label_smoothing) * prior + knobs.label_smoothing / data.n_outputs
    return smoothed.clamp_min(1e-12).log().float()


def _momentum_scale(spec: JobSpec) -> float:
    """How much larger than one gradient the step at zero grows (SGD's momentum buffer: 1/(1−μ))."""
    if spec.training.optimizer == "sgd" and spec.training.momentum > 0:
        return 1.0 / (1.0 - spec.training.momentum)
    return 1.0


def gradient_lambda_max(spec: JobSpec, data: Dataset, knobs: Knobs, seed: int) -> float:
    """max |∂L/∂w| over the input weights at the null model, scaled as the proximal step sees it.

    Exact for a linear model trained on full batches (up to float rounding: ``ROUNDING``);
    a first guess otherwise.
    """
    model = build_model(spec.model, data.n_features, data.n_outputs, torch.Generator().manual_seed(seed))
    model.load_state_dict(null_state(spec, data, knobs, seed))
    model.eval()
    weight, n = model.linears[0].weight, len(data.train)
    grad = torch.zeros_like(weight)
    for X, y in split_chunks(data.train):  # data in memory: one chunk; streamed from disk: a chunk at a time
        loss = plain_loss(model(X), y, data.task, knobs.label_smoothing) * (len(y) / n)
        grad += torch.autograd.grad(loss, weight)[0]
    return float(grad.abs().max()) * _momentum_scale(spec) * (1.0 + ROUNDING)


def _keeps_nothing(spec: JobSpec, data: Dataset, knobs: Knobs, seed: int, lam: float) -> bool:
    """Whether training from the null model at λ₁ = ``lam`` ends with every input weight zero."""
    init = null_state(spec, data, knobs, seed)
    run = train(data, spec.model, spec.training, replace(knobs, l1=lam), seed, init=init)
    return run.features_kept == 0


def find_lambda_max(spec: JobSpec, data: Dataset, knobs: Knobs, seed: int) -> tuple[float, dict[str, Any]]:
    """The smallest λ₁ (within 2 %) at which training keeps no input column, and how it was found.

    Starts from the gradient at zero; a fit checks that it removes every column and
    that 2 % less keeps one; otherwise the value is bracketed and bisected.

    Returns:
        λ_max and ``{"gradient": …, "fits": n, "method": "gradient" | "bisection"}``.
    """
    guess = gradient_lambda_max(spec, data, knobs, seed)
    fits = 0

    def zeroes(lam: float) -> bool:
        nonlocal fits
        fits += 1
        return _keeps_nothing(spec, data, knobs, seed, lam)

    if guess <= 0.0:  # a target the inputs cannot move: nothing to remove
        return 0.0, {"gradient": guess, "fits": 0, "method": "gradient"}
    if zeroes(guess):
        hi, lo = guess, guess / BISECT_TOLERANCE
        while fits < MAX_FITS and zeroes(lo):
            hi, lo = lo, lo / 2.0
    else:
        lo, hi = guess, guess * BISECT_TOLERANCE
        while fits < MAX_FITS and not zeroes(hi):
            lo, hi = hi, hi * 2.0
    exact = fits == 2 and hi == guess
    while fits < MAX_FITS and hi / lo > BISECT_TOLERANCE:
        mid = math.sqrt(lo * hi)
        if zeroes(mid):
            hi = mid
        else:
            lo = mid
    return hi, {"gradient": guess, "fits": fits, "method": "gradient" if exact else "bisection"}


def run_path(run: StageRun, data: Dataset, storage_url: str) -> None:
    """Run a path stage's points in order, in this process (each point needs the one before it).

    λ_max is found once and kept in the study's user attributes, so a resumed
    path walks the same points; a point after one an earlier process finished
    starts cold (that process's weights are gone) and says so.
    """
    spec, study = run.spec, run.study
    n_hidden = spec.model.dropout_slots
    knobs = Knobs.from_params({**run.fixed, "l1": 0.0}, n_hidden)
    if "l1_max" not in study.user_attrs:  # with folds, from every non-test row (the loop's val rows repeat them)
        whole = replace(data, val=data.train, folds=()) if data.folds else data
        lam_max, how = find_lambda_max(spec, whole, knobs, spec.seed)
        study.set_user_attr("l1_max", lam_max)
        study.set_user_attr("l1_max_found", how)
    lam_max = float(study.user_attrs["l1_max"])
    values = path_values(lam_max, run.stage.path_eps, run.target)
    dist = FloatDistribution(values[-1], values[0], log=True)
    done = {int(t.user_attrs["path_index"]) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "path_index" in t.user_attrs}
    cold_cv = "cold (cross-validation keeps one model per fold, none to carry on)"
    state: dict[str, torch.Tensor] | None = None if data.folds else null_state(spec, data, knobs, spec.seed)
    start = cold_cv if data.folds else "null model"
    for index, lam in enumerate(values):
        if index in done:
            state, start = None, "cold (resumed)"
            continue
        asked = run.ask_fixed({"l1": min(max(lam, dist.low), dist.high)}, {"l1": dist})
        if asked is None:
            return
        trial, config = asked
        trial.set_user_attr("path_index", index)
        trial.set_user_attr("warm_start", start)
        outcome = run_trial(trial, config, spec=spec, data=data, stage=run.stage.name,
                            should_stop=run.should_stop, init=state, prunable=False, hold=True)
        if outcome.result is not None:
            trial.set_user_attr("kept_columns", [i for i, k in enumerate(outcome.result.features_mask) if k])
        if outcome.result is not None and outcome.result.model is not None:
            state, start = copy.deepcopy(outcome.result.model.state_dict()), "previous point"
        elif outcome.result is not None:
            state, start = None, cold_cv
        else:
            state, start = None, "cold (the previous point did not complete)"
        run.finish(trial, outcome)
        if outcome.cancelled:
            return


def path_summary(trials: list[FrozenTrial], data: Dataset) -> list[dict[str, Any]]:
    """The path's completed points, strongest λ₁ first: ``{l1, val_loss, val_loss_se, features_kept, kept}``.

    Kept features are named as the data's columns: a table's category is kept when any of its levels is.
    """
    points = sorted((t for t in trials if t.state == TrialState.COMPLETE and "path_index" in t.user_attrs),
                    key=lambda t: t.user_attrs["path_index"])
    out = []
    for t in points:
        inputs = set(t.user_attrs.get("kept_columns", []))
        kept = [name for name, keep in zip(data.columns, data.columns_kept(
            [i in inputs for i in range(data.n_features)]), strict=True) if keep]
        count = len(kept) if data.preprocessing is not None else int(t.user_attrs["features_kept"])
        out.append({"l1": float(t.user_attrs["config"]["l1"]), "val_loss": float(t.user_attrs["val_loss"]),
                    "val_loss_se": float(t.user_attrs.get("val_loss_se", 0.0)), "features_kept": count,
                    "kept": kept, "stage": t.user_attrs.get("stage"), "trial": t.number})
    return out


def one_se_point(path: list[dict[str, Any]]) -> dict[str, Any] | None:
    """glmnet's lambda.1se on the path: the sparsest point whose val loss is within one SE of the best."""
    if not path:
        return None
    best = min(path, key=lambda p: p["val_loss"])
    within = [p for p in path if p["val_loss"] <= best["val_loss"] + best["val_loss_se"]]
    return min(within, key=lambda p: (p["features_kept"], -p["l1"]))
