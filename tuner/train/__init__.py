"""Training, torch only: the data as tensors, the models, the loop, the regularizers.

Knows nothing of Optuna: a trial's knobs come in as ``tuner.knobs.Knobs``.
"""

from tuner.train._cv import refit, train_cv
from tuner.train._data import Dataset, Split, cross_folds, data_dir, load_dataset
from tuner.train._loop import EpochCallback, TrainResult, evaluate, loss_standard_error, plain_loss, train
from tuner.train._models import MLP, build_model
from tuner.train._regularizers import features_kept_mask, l2_penalty, prox_l1_, sparsity

__all__ = [
    "MLP",
    "Dataset",
    "EpochCallback",
    "Split",
    "TrainResult",
    "build_model",
    "cross_folds",
    "data_dir",
    "evaluate",
    "features_kept_mask",
    "l2_penalty",
    "load_dataset",
    "loss_standard_error",
    "plain_loss",
    "prox_l1_",
    "refit",
    "sparsity",
    "train",
    "train_cv",
]
