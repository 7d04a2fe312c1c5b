"""Training, torch only: the data as tensors (or streamed from disk), the models, the loop (one model or K
batched), the regularizers.

Knows nothing of Optuna: a trial's knobs come in as ``tuner.knobs.Knobs``.
"""

from tuner.train._batched import MemberOutcome, auto_batch, n_weights, train_batched
from tuner.train._cv import refit, train_cv
from tuner.train._data import UPLOAD_FORMATS, UPLOADS, Dataset, Split, cross_folds, data_dir, upload_format
from tuner.train._export import MODEL_JSON, MODEL_WEIGHTS, encode_rows, export_model, load_model
from tuner.train._feed import split_chunks
from tuner.train._images import ImageScan, archive_images, scan_images, unsafe_member
from tuner.train._loop import EpochCallback, TrainResult, evaluate, loss_standard_error, plain_loss, train
from tuner.train._models import MLP, build_model
from tuner.train._module import (
    DROPOUT_TYPES,
    PluginModel,
    build_any,
    check_model,
    decay_weights,
    dropout_modules,
    make_plugin,
)
from tuner.train._regularizers import features_kept_mask, l2_penalty, prox_l1_, sparsity
from tuner.train._sources import MEMORY_DATA_BYTES, ChunkedSource, memory_data_bytes
from tuner.train._stream import StreamSplit, is_streamed, load_dataset, release
from tuner.train._tables import ColumnPrep, TablePrep

__all__ = [
    "DROPOUT_TYPES",
    "MEMORY_DATA_BYTES",
    "MLP",
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "UPLOADS",
    "UPLOAD_FORMATS",
    "ChunkedSource",
    "ColumnPrep",
    "Dataset",
    "EpochCallback",
    "ImageScan",
    "MemberOutcome",
    "PluginModel",
    "Split",
    "StreamSplit",
    "TablePrep",
    "TrainResult",
    "archive_images",
    "auto_batch",
    "build_any",
    "build_model",
    "check_model",
    "cross_folds",
    "data_dir",
    "decay_weights",
    "dropout_modules",
    "encode_rows",
    "evaluate",
    "export_model",
    "features_kept_mask",
    "is_streamed",
    "l2_penalty",
    "load_dataset",
    "load_model",
    "loss_standard_error",
    "make_plugin",
    "memory_data_bytes",
    "n_weights",
    "plain_loss",
    "prox_l1_",
    "refit",
    "release",
    "scan_images",
    "sparsity",
    "split_chunks",
    "train",
    "train_batched",
    "train_cv",
    "unsafe_member",
    "upload_format",
]
