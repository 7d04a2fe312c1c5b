"""Reading a streamed split: training batches through DataLoader workers, evaluation a chunk at a time.

Training: the loop draws each epoch's permutation in its own process, from its own
generator, as it does for data in memory; the permutation goes to a torch ``DataLoader``
whose workers gather those rows from the mapped cache file, many batches per round
trip (``FETCH_BYTES``), and the loop cuts them into the same batches, in the same order,
that ``X[order[start:start + batch_size]]`` gives in memory. The workers (``loader_workers``)
overlap the disk reads with training; they live as long as the training run.

Evaluation reads the file front to back in chunks with plain reads (no mapping: the
chunks pass through the page cache, not the process's memory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from tuner.train._data import Split
from tuner.train._stream import StreamSplit

__all__ = ["FETCH_BYTES", "StreamFeed", "loader_workers", "split_chunks"]

FETCH_BYTES = 2**20  # rows a worker gathers per round trip: many small batches in one message
CHUNK_BYTES = 4 * 2**20  # rows evaluation reads at once


def loader_workers() -> int:
    """DataLoader workers: one beside the trainer on two cores, two from three cores on (a gather is cheap)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores - 1))


def _row_bytes(split: Split) -> int:
    return int(np.prod(split.X.shape[1:])) * 4


def split_chunks(split: Split) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(X, y) of consecutive rows covering the split: a split in memory as one chunk, a streamed one read in
    chunks of about ``CHUNK_BYTES``."""
    if not isinstance(split, StreamSplit):
        yield split.X, split.y
        return
    n, shape = len(split), tuple(split.X.shape[1:])
    rows = max(1, CHUNK_BYTES // _row_bytes(split))
    if n == 0:
        return
    with open(split.path, "rb") as fh:
        for start in range(0, n, rows):
            m = min(rows, n - start)
            X = np.fromfile(fh, dtype=np.float32, count=m * int(np.prod(shape)))
            yield torch.from_numpy(X.reshape(m, *shape)), split.y[start:start + m]


class _Rows(TorchDataset[np.ndarray]):
    """The cache file's rows, mapped in each worker on first use: ``rows[order_slice]`` in that order."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path, self.shape = path, shape
        self._mapped: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        if self._mapped is None:
            self._mapped = np.memmap(self.path, dtype=np.float32, mode="r", shape=self.shape)
        return np.asarray(self._mapped[rows])

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "shape": self.shape, "_mapped": None}


class _Blocks(Sampler[np.ndarray]):
    """The epoch's permutation in blocks of whole batches; the loop sets ``order`` before each epoch."""

    def __init__(self, block: int) -> None:
        self.block, self.order = block, np.empty(0, dtype=np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.order), self.block):
            yield self.order[start:start + self.block]

    def __len__(self) -> int:
        return -(-len(self.order) // self.block)


def _as_is(block: Any) -> Any:
    """The collate step: the worker's array as it is (pickled through the pipe, no shared-memory tensor)."""
    return block


class StreamFeed:
    """Training batches of a streamed split, gathered by DataLoader worker processes; ``close`` stops them."""

    def __init__(self, split: StreamSplit, batch_size: int, device: torch.device) -> None:
        self.split, self.batch_size, self.device = split, batch_size, device
        per_block = max(1, FETCH_BYTES // (_row_bytes(split) * batch_size))
        self._sampler = _Blocks(per_block * batch_size)
        workers = loader_workers()
        self._loader = DataLoader(_Rows(split.path, tuple(split.X.shape)), sampler=self._sampler, batch_size=None,
                                  num_workers=workers, collate_fn=_as_is, persistent_workers=True,
                                  prefetch_factor=4)

    def batches(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(X, y) of ``order[start:start + batch_size]`` for each start, in order, on the device."""
        self._sampler.order = order.numpy()
        start = 0
        for block in self._loader:
            for X in torch.from_numpy(block).split(self.batch_size):
                rows = order[start:start + len(X)]
                start += len(X)
                yield X.to(self.device), self.split.y[rows].to(self.device)

    def close(self) -> None:
        """Stop the workers now (a cancel or an error mid-epoch included), not when the loader is collected."""
        iterator, self._loader._iterator = self._loader._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)  # torch's own teardown of its worker processes
        if shutdown is not None:
            shutdown()
