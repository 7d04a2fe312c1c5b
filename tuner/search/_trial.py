"""One trial: train under a configuration, report each epoch, record what DESIGN.md lists.

Every backend runs a trial through ``run_trial`` (or, batched, through a ``TrialRecorder``),
which never raises: a trial that fails, is pruned, is cancelled or crashes comes back as its
outcome. A failed trial is failed in one place, ``fail_trial``, whoever finds it failed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import Cancelled, TrialFailed
from tuner.knobs import Knobs
from tuner.search._board import EpochBoard
from tuner.spec import JobSpec
from tuner.storage import write_trials
from tuner.train import Dataset, TrainResult, loss_standard_error, train, train_cv

__all__ = ["TrialOutcome", "TrialRecorder", "Unwritten", "fail_trial", "objective_values", "run_trial", "set_attrs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unwritten:
    """What a trial that ended still has to write, with its end, in the transaction that tells the study
    (``StageRun.finish``)."""

    trial: FrozenTrial  # the trial as its recorder knows it, reports and attributes included: the sampler's view
    user_attrs: list[tuple[int, str, Any]]  # ``write_trials``' rows, the batch's other queued rows among them
    intermediate: list[tuple[int, int, float]]


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended, as the study should be told."""

    state: TrialState
    values: list[float] | None = None
    reason: str | None = None
    cancelled: bool = False
    result: TrainResult | None = None  # a completed trial's run: its model warm-starts the next path point
    unwritten: Unwritten | None = None  # with a board: its last reports and attributes, to write with its end


def fail_trial(storage: optuna.storages.BaseStorage, trial_id: int, reason: str, *, interrupted: bool = False,
               cancelled: bool = False) -> TrialOutcome:
    """Record why a trial failed and return the outcome that tells the study so.

    The trial keeps ``fail_reason``, and ``interrupted: true`` when it was stopped (a cancel, a process
    or a worker that went away) rather than broken. Never raises: a trial that can no longer be written
    (a reclaimer finished it already) is logged, and the outcome still carries the reason.

    Args:
        trial_id: the trial's id in ``storage`` (``trial._trial_id``), not its number in the study.
        interrupted: it was stopped before it finished, not broken.
        cancelled: the stop was the job's cancel; the stage hands out no more trials.
    """
    attrs: dict[str, Any] = {"interrupted": True} if interrupted else {}
    try:
        _write(storage, trial_id, {**attrs, "fail_reason": reason})
    except Exception:  # a reclaimer may have finished it already: the outcome still says why
        log.warning("trial %d: its failure (%s) could not be recorded", trial_id, reason, exc_info=True)
    return TrialOutcome(TrialState.FAIL, reason=reason, cancelled=cancelled)


def objective_values(metrics: dict[str, float | int | None], objectives: list[str]) -> list[float]:
    """The objective values of a trial from its recorded metrics."""
    out = []
    for name in objectives:
        if name == "val_error":
            out.append(1.0 - float(metrics["val_acc"] or 0.0))
        else:
            out.append(float(metrics[name] or 0.0))
    return out


def _write(storage: optuna.storages.BaseStorage, trial_id: int, attrs: dict[str, Any]) -> None:
    """A trial's user attributes, in one transaction."""
    write_trials(storage, user_attrs=[(trial_id, key, value) for key, value in attrs.items()])


def set_attrs(trial: optuna.Trial, attrs: dict[str, Any], board: EpochBoard | None = None) -> None:
    """``trial.set_user_attr`` for several attributes at once: one transaction, and the trial's own view.

    With a ``board`` (a batch member that ends), what the board holds is written in that transaction too.
    """
    if board is not None:
        board.close(trial, attrs)
    else:
        _write(trial.storage, trial._trial_id, attrs)
    _show(trial, attrs)


def _show(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Update what ``trial.user_attrs`` answers from (its cached frozen trial) with ``attrs``."""
    cached = getattr(trial, "_cached_frozen_trial", None)
    if cached is not None:
        cached.user_attrs.update(attrs)


class TrialRecorder:
    """What a trial records while it trains and when it ends, whichever loop trained it (alone or batched).

    Its attributes are written in one transaction at the start (stage, config) and one at the end.
    With an ``EpochBoard`` (a batch's, or with ``flush`` the trial's own when it trains alone), its first
    attributes and its epoch reports are queued on the board, which writes them (with the other members')
    at most every ``FLUSH_S``, and the rest with its last attributes as it ends, and answers the pruner.
    """

    def __init__(self, trial: optuna.Trial, config: dict[str, float], *, spec: JobSpec, data: Dataset, stage: str,
                 should_stop: Callable[[], bool] | None = None, prunable: bool = True,
                 board: EpochBoard | None = None, flush: bool = False, hold: bool = False) -> None:
        self.trial, self.data, self.should_stop = trial, data, should_stop
        self.board = board if board is not None and board.batches else None
        self.flush = flush  # the board is this trial's own: it is flushed after each report
        self.hold = hold  # an ending trial's last rows are left for its end to write (``Unwritten``)
        self.reported: dict[int, float] = {}
        self.objectives = spec.search.objectives
        self.prune = prunable and len(self.objectives) == 1 and spec.search.pruner != "none"
        self.step = "fold" if data.folds else "epoch"  # with cross-validation a step is a fold (the mean so far)
        self.curve_t: list[float] = []
        self.curve_v: list[float] = []
        self.knobs = Knobs.from_params(config, spec.model.dropout_slots)
        first = {"stage": stage, "config": config}
        if self.board is not None:  # a batch member: written with the batch's next reports
            self.board.start(trial, first)
            _show(trial, first)
        else:
            set_attrs(trial, first)

    def on_epoch(self, epoch: int, train_loss: float | None, val_loss: float) -> None:
        """Report a step (an epoch, or a fold); raises ``Cancelled`` or ``TrialPruned`` to stop the trial.

        ``train_loss`` is None where it is measured only at the epoch kept (``search.train_curve: false``)."""
        if train_loss is not None:
            self.curve_t.append(train_loss)
        self.curve_v.append(val_loss)
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"cancelled in {self.step} {epoch}")
        if len(self.objectives) != 1:
            return
        if self.board is not None:
            self.board.report(self.trial, epoch, val_loss)
            if self.flush:
                self.board.flush()
            self.reported[epoch] = val_loss
            pruned = self.prune and self.board.should_prune(self.trial, self.reported)
        else:
            self.trial.report(val_loss, epoch)
            pruned = self.prune and self.trial.should_prune()
        if pruned:
            raise optuna.TrialPruned(f"pruned after {self.step} {epoch}")

    def cancel_check(self, epoch: int, train_loss: float | None, val_loss: float) -> None:
        """An epoch inside a fold: only a cancel is checked there."""
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"cancelled in epoch {epoch} of fold {len(self.curve_v) + 1}")

    def conclude(self, ended: TrainResult | Exception) -> TrialOutcome:
        """Record how training ended and say what the study should be told.

        Raises:
            Exception: ``ended`` itself when it is none of pruned, failed or cancelled (a bug).
        """
        trial, curve_t, curve_v = self.trial, self.curve_t, self.curve_v
        if isinstance(ended, TrainResult):
            attrs = _result_attrs(ended)
            if ended.val_loss_se is not None:  # cross-validation: the spread of the folds
                attrs.update(val_loss_se=ended.val_loss_se, fold_val_losses=ended.fold_val_losses)
            else:  # one val split: the sampling noise of its examples
                assert ended.model is not None
                attrs["val_loss_se"] = loss_standard_error(ended.model, self.data.val, self.data.task)
            unwritten = self._end(attrs)
            values = objective_values(ended.metrics(), self.objectives)
            if self.board is not None:
                self.board.completed(self.trial, self.reported, values[0])
            return TrialOutcome(TrialState.COMPLETE, values=values, result=ended, unwritten=unwritten)
        if isinstance(ended, optuna.TrialPruned):
            return TrialOutcome(TrialState.PRUNED, unwritten=self._end(_partial_attrs(curve_t, curve_v)))
        if isinstance(ended, TrialFailed):
            set_attrs(trial, _partial_attrs(curve_t, curve_v), self.board)
            return fail_trial(trial.storage, trial._trial_id, str(ended))
        if isinstance(ended, Cancelled):
            set_attrs(trial, _partial_attrs(curve_t, curve_v), self.board)
            return fail_trial(trial.storage, trial._trial_id, str(ended), interrupted=True, cancelled=True)
        raise ended


    def _end(self, attrs: dict[str, Any]) -> Unwritten | None:
        """The last attributes of a trial that completed or was pruned: written now (with what the board
        holds), or with a board and ``hold`` left for the trial's end to write (``TrialOutcome.unwritten``)."""
        if self.board is None or not self.hold:
            set_attrs(self.trial, attrs, self.board)
            return None
        user_attrs, intermediate = self.board.take(self.trial, attrs)
        _show(self.trial, attrs)
        known = copy.deepcopy(self.trial._cached_frozen_trial)
        known.intermediate_values = {**known.intermediate_values, **self.reported}
        return Unwritten(known, user_attrs, intermediate)


def run_trial(trial: optuna.Trial, config: dict[str, float], *, spec: JobSpec, data: Dataset, stage: str,
              should_stop: Callable[[], bool] | None = None, init: dict[str, torch.Tensor] | None = None,
              prunable: bool = True, hold: bool = False) -> TrialOutcome:
    """Train one configuration for ``trial`` and record it; never raises.

    Args:
        init: weights to start from (a path point starts from the previous point's).
        prunable: False for a trial that must run to the end (a path point: the path needs every point).
        hold: a completed or pruned trial's last reports and attributes are left in the outcome
            (``TrialOutcome.unwritten``) for ``StageRun.finish`` to write with its end; without it (a
            caller that tells the study itself) everything is written before this returns.

    Returns:
        How the trial ended: COMPLETE with its values, PRUNED, or FAIL with its reason (a NaN loss, a
        cancel, or a crash: a bug in one trial must not leave it RUNNING nor stop its stage).
    """
    board = EpochBoard(trial.study)  # its reports are written together, at most every FLUSH_S, as a batch's
    try:
        return _run_trial(trial, config, spec=spec, data=data, stage=stage, should_stop=should_stop, init=init,
                          prunable=prunable, board=board, hold=hold)
    except Exception as exc:
        log.exception("trial %d of stage %s crashed", trial.number, stage)
        board.close_crashed(trial)
        return fail_trial(trial.storage, trial._trial_id, repr(exc))


def _run_trial(trial: optuna.Trial, config: dict[str, float], *, spec: JobSpec, data: Dataset, stage: str,
               should_stop: Callable[[], bool] | None, init: dict[str, torch.Tensor] | None,
               prunable: bool, board: EpochBoard, hold: bool) -> TrialOutcome:
    rec = TrialRecorder(trial, config, spec=spec, data=data, stage=stage, should_stop=should_stop, prunable=prunable,
                        board=board, flush=True, hold=hold)
    try:
        if data.folds:
            trial.set_user_attr("cv_folds", len(data.folds))
            result = train_cv(data, spec.model, spec.training, rec.knobs, spec.seed, on_fold=rec.on_epoch,
                              on_epoch=rec.cancel_check, should_stop=should_stop,
                              train_curve=spec.search.train_curve)
        else:
            result = train(data, spec.model, spec.training, rec.knobs, spec.seed, rec.on_epoch, should_stop,
                           init=init, train_curve=spec.search.train_curve)
    except (optuna.TrialPruned, TrialFailed, Cancelled) as exc:
        return rec.conclude(exc)
    return rec.conclude(result)


def _result_attrs(result: TrainResult) -> dict[str, Any]:
    """What a completed trial records of its run."""
    attrs: dict[str, Any] = {key: value for key, value in result.metrics().items() if value is not None}
    attrs["best_epoch"] = result.best_epoch
    if result.curve_train:  # a search without train curves measures the train loss at the kept epoch only
        attrs["train_curve"] = [round(v, 6) for v in result.curve_train]
    attrs["val_curve"] = [round(v, 6) for v in result.curve_val]
    return attrs


def _partial_attrs(curve_t: list[float], curve_v: list[float]) -> dict[str, Any]:
    """A trial that stopped early keeps what it measured up to its last full epoch: its val loss, and its
    train loss and gap where every epoch's was measured (``search.train_curve``)."""
    attrs: dict[str, Any] = {}
    if curve_v:
        attrs["val_loss"] = curve_v[-1]
    if curve_t:
        attrs.update(train_loss=curve_t[-1], gap=curve_v[-1] - curve_t[-1])
        attrs["train_curve"] = [round(v, 6) for v in curve_t]
    attrs["epochs"] = len(curve_v)
    attrs["val_curve"] = [round(v, 6) for v in curve_v]
    return attrs
