"""Data larger than memory: read a chunk of rows at a time into a float32 cache on disk, never whole.

When a dataset's features would take more than ``REGTUNE_MEMORY_DATA_BYTES`` (default
1 GiB) as float32 tensors, ``load_dataset`` reads it as a ``ChunkedSource``
(``tuner.train._sources``: a Parquet file, batch by batch; any format that can give its
rows a chunk at a time) in passes: the targets, one value a row, which alone decide the split (the same rows as in
memory: ``targets_and_rows``); the training rows' mean, then their std, summed chunk by
chunk (standardization fitted on the training split, as in memory); then the features,
standardized in float64 and written as float32 rows, one file per split, each split's
rows in the order ``X[rows]`` holds them in memory (every value equal to the in-memory
one). Below the threshold nothing changes: ``load_in_memory`` holds every split as
tensors (the fast path).

Why a cache and not the source itself in the loop: training visits the rows in a random
permutation, the one the in-memory loop draws from the same generator, so both paths
give the same losses; a Parquet row group is compressed and decoded whole (an image
file too), a row of the cache is one read. The cache is written once per job and read
by every trial, in ``tempfile.gettempdir()`` (``TMPDIR``; not a tmpfs, or it is memory
again); it is removed when the dataset is released (``release``), garbage collected,
or the process exits.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from tuner.errors import DataError
from tuner.spec import DatasetSpec
from tuner.train._data import _FOLDS, Dataset, Split, load_in_memory, targets_and_rows
from tuner.train._sources import MEMORY_DATA_BYTES, ChunkedSource, memory_data_bytes, nbytes, open_source

__all__ = ["StreamSplit", "is_streamed", "load_dataset", "load_streamed", "release"]

class _Cache:
    """A folder of split files, removed by ``remove``, when garbage collected, or at exit (by its own process only)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="regtune-stream-"))
        self._remove = weakref.finalize(self, _remove_folder, self.folder, os.getpid())

    def remove(self) -> None:
        self._remove()


def _remove_folder(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # never from a forked worker that inherited the finalizer
        shutil.rmtree(folder, ignore_errors=True)


def _map(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """The file as a float32 tensor, mapped (copy on write: nothing is read until used, nothing written back)."""
    if shape[0] == 0:
        return torch.empty(shape)
    return torch.from_numpy(np.memmap(path, dtype=np.float32, mode="c", shape=shape))


@dataclass(frozen=True)
class StreamSplit(Split):
    """A split whose features live in a float32 file on disk; its targets are in memory (one value a row).

    ``X`` maps the file: its shape and a few rows cost nothing, but a computation over all of it
    reads it all, so the training loop reads batches through a DataLoader (``tuner.train._feed``)
    and evaluation a chunk at a time. Pickled (a Ray worker, a DataLoader worker started by spawn)
    it travels as the file's name, and the copy owns nothing.
    """

    path: Path = Path()
    cache: _Cache | None = field(default=None, repr=False, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return _reopen, (self.path, tuple(self.X.shape), self.y)


def _reopen(path: Path, shape: tuple[int, ...], y: torch.Tensor) -> StreamSplit:
    return StreamSplit(_map(path, shape), y, path)


def is_streamed(data: Dataset) -> bool:
    """Whether the dataset's splits are read from disk (over ``REGTUNE_MEMORY_DATA_BYTES``)."""
    return isinstance(data.train, StreamSplit)


def release(data: Dataset) -> None:
    """Remove a streamed dataset's cache files now (a no-op for data in memory)."""
    for split in (data.train, data.val, data.test):
        if isinstance(split, StreamSplit) and split.cache is not None:
            split.cache.remove()


def load_dataset(spec: DatasetSpec, seed: int, max_cells: int | None = None) -> Dataset:
    """Load, split and (optionally) standardize the dataset a spec names: in memory, or streamed from disk.

    Args:
        max_cells: the most rows × columns a file may hold (checked while it is read).

    Raises:
        DataError: the file is missing, escapes REGTUNE_DATA_DIR, or holds unusable values; cross-validation
            asked of data over ``REGTUNE_MEMORY_DATA_BYTES``.
    """
    source = open_source(spec, max_cells)
    if source is None:
        return load_in_memory(spec, seed, max_cells)
    with closing(source):
        if nbytes(source) <= memory_data_bytes():
            source.close()
            return load_in_memory(spec, seed, max_cells)
        return load_streamed(spec, seed, source)


def _train_sum(source: ChunkedSource, train_rows: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """The sum over the training rows of their features (or, given ``mean``, of their squared deviations).

    Added row after row, as numpy sums an array over its first axis: the running sum
    goes in as the first row of each chunk's sum, so the result is the in-memory path's
    to the last bit (and so is every standardized value).
    """
    total, start = np.zeros(source.example_shape), 0
    for chunk in source.chunks():
        lo, hi = np.searchsorted(train_rows, [start, start + len(chunk)])
        part = chunk[train_rows[lo:hi] - start]
        start += len(chunk)
        if mean is not None:
            part = part - mean
            part = part * part
        total = np.concatenate([total[None], part]).sum(axis=0)
    return total


def _train_moments(source: ChunkedSource, train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof 0) per feature of the training rows, as ``X[train].mean(0)`` and ``.std(0)`` give
    them: two passes over the source."""
    mean = _train_sum(source, train_rows) / len(train_rows)
    return mean, np.sqrt(_train_sum(source, train_rows, mean) / len(train_rows))


def load_streamed(spec: DatasetSpec, seed: int, source: ChunkedSource) -> Dataset:
    """Split and standardize ``source`` as ``load_in_memory`` would, its features written to a cache on disk.

    Raises:
        DataError: bad values in the source, or ``split.folds``: cross-validation re-standardizes every
            fold over all rows, which needs them in memory.
    """
    if spec.split.folds:
        raise DataError.one("dataset.split.folds", f"cross-validation needs the data in memory, but its features "
                            f"take {nbytes(source)} bytes, over {MEMORY_DATA_BYTES} ({memory_data_bytes()}): "
                            "split by val and test fractions instead, or raise the limit", spec.split.folds)
    raw_y, folds, task = source.targets()
    if len(raw_y) != source.rows:
        raise DataError.one("dataset.path", f"{spec.path!r} gave {len(raw_y)} targets for {source.rows} rows")
    y, classes, n_outputs, idx = targets_and_rows(spec, seed, raw_y, folds, task)
    tr = idx["train"]
    shape = source.example_shape
    mu, sd = _train_moments(source, tr) if spec.standardize else (np.zeros(shape), np.ones(shape))
    sd[sd == 0] = 1.0
    y_mu, target_scale = 0.0, 1.0
    if task == "regression" and spec.standardize:
        y_mu, target_scale = float(y[tr].mean()), float(y[tr].std() or 1.0)
        y = (y - y_mu) / target_scale
    cache = _Cache()
    files = {f: cache.folder / f"{f}.f32" for f in _FOLDS}
    handles: dict[str, BinaryIO] = {}
    try:
        handles = {f: open(path, "wb") for f, path in files.items()}  # noqa: SIM115 (closed below)
        start = 0
        for chunk in source.chunks():
            X = ((chunk - mu) / sd).astype(np.float32)
            for f, rows in idx.items():
                lo, hi = np.searchsorted(rows, [start, start + len(chunk)])
                handles[f].write(np.ascontiguousarray(X[rows[lo:hi] - start]).tobytes())
            start += len(chunk)
    except BaseException:
        cache.remove()
        raise
    finally:
        for fh in handles.values():
            fh.close()
    if start != source.rows:
        cache.remove()
        raise DataError.one("dataset.path", f"{spec.path!r} gave {start} rows of features, but says it holds "
                            f"{source.rows}")
    y_dtype = torch.long if task == "classification" else torch.float32

    def part(f: str) -> StreamSplit:
        rows = idx[f]
        return StreamSplit(_map(files[f], (len(rows), *shape)), torch.as_tensor(y[rows], dtype=y_dtype),
                           files[f], cache)

    return Dataset(task=task, feature_names=list(source.feature_names), n_outputs=n_outputs, train=part("train"),
                   val=part("val"), test=part("test"), target_scale=target_scale, classes=classes,
                   feature_mean=[float(v) for v in mu.ravel()], feature_std=[float(v) for v in sd.ravel()],
                   target_mean=y_mu)
