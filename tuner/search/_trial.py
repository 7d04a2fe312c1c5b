"""One trial: train under a configuration, report each epoch, record what DESIGN.md lists."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import TrialState

from tuner.errors import Cancelled, TrialFailed
from tuner.knobs import Knobs
from tuner.spec import JobSpec
from tuner.train import Dataset, TrainResult, loss_standard_error, train, train_cv

__all__ = ["TrialOutcome", "objective_values", "run_trial"]


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended, as the study should be told."""

    state: TrialState
    values: list[float] | None = None
    reason: str | None = None
    cancelled: bool = False
    result: TrainResult | None = None  # a completed trial's run: its model warm-starts the next path point


def objective_values(metrics: dict[str, float | int | None], objectives: list[str]) -> list[float]:
    """The objective values of a trial from its recorded metrics."""
    out = []
    for name in objectives:
        if name == "val_error":
            out.append(1.0 - float(metrics["val_acc"] or 0.0))
        else:
            out.append(float(metrics[name] or 0.0))
    return out


def run_trial(trial: optuna.Trial, config: dict[str, float], *, spec: JobSpec, data: Dataset, stage: str,
              should_stop: Callable[[], bool] | None = None, init: dict[str, torch.Tensor] | None = None,
              prunable: bool = True) -> TrialOutcome:
    """Train one configuration for ``trial``; never raises for a failed, pruned or cancelled trial.

    Args:
        init: weights to start from (a path point starts from the previous point's).
        prunable: False for a trial that must run to the end (a path point: the path needs every point).
    """
    objectives = spec.search.objectives
    prune = prunable and len(objectives) == 1 and spec.search.pruner != "none"
    curve_t: list[float] = []
    curve_v: list[float] = []

    step = "fold" if data.folds else "epoch"  # with cross-validation a step is a fold: its value the mean so far

    def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        curve_t.append(train_loss)
        curve_v.append(val_loss)
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled in {step} {epoch}")
        if len(objectives) == 1:
            trial.report(val_loss, epoch)
            if prune and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {step} {epoch}")

    def cancel_check(epoch: int, train_loss: float, val_loss: float) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled in epoch {epoch} of fold {len(curve_v) + 1}")

    trial.set_user_attr("stage", stage)
    trial.set_user_attr("config", config)
    knobs = Knobs.from_params(config, spec.model.dropout_slots)
    try:
        if data.folds:
            trial.set_user_attr("cv_folds", len(data.folds))
            result = train_cv(data, spec.model, spec.training, knobs, spec.seed, on_fold=on_epoch,
                              on_epoch=cancel_check, should_stop=should_stop)
        else:
            result = train(data, spec.model, spec.training, knobs, spec.seed, on_epoch, should_stop, init=init)
    except optuna.TrialPruned:
        _record_partial(trial, curve_t, curve_v)
        return TrialOutcome(TrialState.PRUNED)
    except TrialFailed as exc:
        _record_partial(trial, curve_t, curve_v)
        trial.set_user_attr("fail_reason", str(exc))
        return TrialOutcome(TrialState.FAIL, reason=str(exc))
    except Cancelled as exc:
        _record_partial(trial, curve_t, curve_v)
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("fail_reason", str(exc))
        return TrialOutcome(TrialState.FAIL, reason=str(exc), cancelled=True)
    _record(trial, result)
    if result.val_loss_se is not None:  # cross-validation: the spread of the folds
        trial.set_user_attr("val_loss_se", result.val_loss_se)
        trial.set_user_attr("fold_val_losses", result.fold_val_losses)
    else:  # one val split: the sampling noise of its examples
        assert result.model is not None
        trial.set_user_attr("val_loss_se", loss_standard_error(result.model, data.val, data.task))
    return TrialOutcome(TrialState.COMPLETE, values=objective_values(result.metrics(), objectives), result=result)


def _record(trial: optuna.Trial, result: TrainResult) -> None:
    for key, value in result.metrics().items():
        if value is not None:
            trial.set_user_attr(key, value)
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("train_curve", [round(v, 6) for v in result.curve_train])
    trial.set_user_attr("val_curve", [round(v, 6) for v in result.curve_val])


def _record_partial(trial: optuna.Trial, curve_t: list[float], curve_v: list[float]) -> None:
    """A trial that stopped early keeps what it measured up to its last full epoch."""
    if curve_t:
        trial.set_user_attr("train_loss", curve_t[-1])
        trial.set_user_attr("val_loss", curve_v[-1])
        trial.set_user_attr("gap", curve_v[-1] - curve_t[-1])
    trial.set_user_attr("epochs", len(curve_t))
    trial.set_user_attr("train_curve", [round(v, 6) for v in curve_t])
    trial.set_user_attr("val_curve", [round(v, 6) for v in curve_v])
