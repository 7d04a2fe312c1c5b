"""Cross-validation for small data: k folds of the non-test rows, a trial's val loss their mean.

One validation split of a small data set is noisy: the choice follows the split.
With ``split: {test: 0.2, folds: 5}`` every trial trains once per fold and
reports the mean val loss over the folds, with its standard error from the
folds' spread (what ``one_se`` needs). The folds themselves are cut when the
data is loaded (``tuner.train._data.cross_folds``). The configuration
finally chosen is refit on all non-test rows (``refit``) before its one test score.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import replace

from tuner.knobs import Knobs
from tuner.spec import ModelSpec, TrainingSpec
from tuner.train._data import Dataset
from tuner.train._loop import EpochCallback, TrainResult, train

__all__ = ["refit", "train_cv"]


def train_cv(data: Dataset, model_spec: ModelSpec, spec: TrainingSpec, knobs: Knobs, seed: int,
             on_fold: EpochCallback | None = None, on_epoch: EpochCallback | None = None,
             should_stop: Callable[[], bool] | None = None, train_curve: bool = True) -> TrainResult:
    """Train on every fold of ``data.folds``; the result holds the fold means and the folds' standard error.

    Args:
        on_fold: called after each fold with (fold number, mean train loss so far, mean val loss so far);
            may raise to stop (pruning on the folds seen).
        on_epoch: called after each epoch of each fold; may raise to stop (a cancel).
        should_stop: asked between batches of each fold (``train``'s); True stops the run.
        train_curve: ``train``'s, for each fold (``on_epoch`` then gets None for the train loss; ``on_fold``
            gets the folds' kept train losses either way).

    Returns:
        A ``TrainResult`` with no model: the means over the folds (``epochs`` summed, ``best_epoch`` the
        mean best epoch, what a refit trains for), ``val_loss_se`` and ``fold_val_losses``.
    """
    runs: list[TrainResult] = []
    for number, fold in enumerate(data.folds, start=1):
        runs.append(train(fold, model_spec, spec, knobs, seed, on_epoch, should_stop, train_curve=train_curve))
        if on_fold is not None:
            on_fold(number, statistics.fmean(r.train_loss for r in runs), statistics.fmean(r.val_loss for r in runs))
    k = len(runs)
    vals = [r.val_loss for r in runs]

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.fmean(present) if present else None

    n, n_train = min(len(r.curve_val) for r in runs), min(len(r.curve_train) for r in runs)
    return TrainResult(
        train_loss=statistics.fmean(r.train_loss for r in runs), val_loss=statistics.fmean(vals),
        train_acc=mean([r.train_acc for r in runs]), val_acc=mean([r.val_acc for r in runs]),
        sparsity=statistics.fmean(r.sparsity for r in runs),
        features_mask=[2 * sum(col) > k for col in zip(*(r.features_mask for r in runs), strict=True)],
        epochs=sum(r.epochs for r in runs), best_epoch=round(statistics.fmean(r.best_epoch for r in runs)),
        seconds=sum(r.seconds for r in runs),
        curve_train=[statistics.fmean(r.curve_train[i] for r in runs) for i in range(n_train)],
        curve_val=[statistics.fmean(r.curve_val[i] for r in runs) for i in range(n)],
        val_loss_se=statistics.stdev(vals) / math.sqrt(k) if k > 1 else 0.0, fold_val_losses=vals,
    )


def refit(data: Dataset, model_spec: ModelSpec, spec: TrainingSpec, knobs: Knobs, seed: int,
          epochs: int, should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train on every non-test row for ``epochs`` epochs (the folds' mean best epoch), no early stopping.

    There are no validation rows left to stop on: the folds chose the length. The
    loop's val columns then repeat the training rows and mean nothing.
    """
    fit = replace(data, val=data.train, folds=())
    return train(fit, model_spec, spec.model_copy(update={"epochs": max(1, epochs), "early_stopping": None}),
                 knobs, seed, should_stop=should_stop)
