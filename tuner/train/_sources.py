"""Data sources that give their rows a chunk at a time, and the threshold over which a dataset is streamed.

A ``ChunkedSource`` is what the streaming path (``tuner.train._stream``) needs of a
format: its rows' count and shape, every row's target (one value a row, held in memory:
they alone decide the split), and its features in chunks of consecutive rows, never all
at once. ``ParquetSource`` reads a Parquet table batch by batch; an image folder can be
another (decoding a chunk of files at a time) and plugs into ``open_source``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from tuner.errors import DataError, RegtuneError
from tuner.spec import DatasetSpec
from tuner.train._data import _FOLDS, UPLOADS, _floats, _infer_task, _open_csv, data_dir

__all__ = ["CHUNK_ROWS", "MEMORY_DATA_BYTES", "ChunkedSource", "ParquetSource", "memory_data_bytes", "nbytes",
           "open_source"]

MEMORY_DATA_BYTES = "REGTUNE_MEMORY_DATA_BYTES"
_DEFAULT_BYTES = 2**30
CHUNK_ROWS = 65_536  # rows a source reads at once
_NUMBERS_ONLY = (f"a table over {MEMORY_DATA_BYTES} is streamed from disk, and its features must be finite numbers "
                 "(integers or floats), none missing; categories and missing values are read in memory only")


def memory_data_bytes() -> int:
    """``REGTUNE_MEMORY_DATA_BYTES``: the most bytes of float32 features held in memory (0: stream everything)."""
    raw = os.environ.get(MEMORY_DATA_BYTES, "").strip()
    if not raw:
        return _DEFAULT_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise RegtuneError(f"The {MEMORY_DATA_BYTES} environment variable must be an integer >= 0 (bytes). "
                           f"Got {raw!r} instead.")
    return value


class ChunkedSource(Protocol):
    """A dataset that gives its rows a chunk at a time: what the streaming path needs of a format."""

    feature_names: list[str]
    example_shape: tuple[int, ...]  # one row's features: (d,), or (C, H, W) for an image
    rows: int

    def targets(self) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Every row's target as read (labels, or numbers for a regression), its fold (or None), and the task."""
        ...

    def chunks(self) -> Iterator[np.ndarray]:
        """The features of consecutive rows, first to last: float64 arrays of shape (m, *example_shape)."""
        ...

    def close(self) -> None: ...


def nbytes(source: ChunkedSource) -> int:
    """What the features take as float32 tensors."""
    return source.rows * int(np.prod(source.example_shape)) * 4


class ParquetSource:
    """A Parquet table read batch by batch (pyarrow), by the in-memory reader's rules: numeric features,
    a target, optionally a split column."""

    def __init__(self, spec: DatasetSpec, max_cells: int | None = None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.spec, self._fh = spec, _open_csv(spec)
        try:
            self._file = pq.ParquetFile(self._fh, pre_buffer=False)  # read as iterated, not the whole file ahead
        except (pa.ArrowException, OSError) as exc:
            self._fh.close()
            raise DataError.one("dataset.path", f"cannot read {spec.path!r} as Parquet: {exc}") from None
        names = list(self._file.schema_arrow.names)
        self.rows: int = int(self._file.metadata.num_rows)
        if max_cells is not None and self.rows * len(names) > max_cells:
            self.close()
            raise DataError.one("dataset.path", f"{spec.path!r} holds more than {max_cells} cells (rows × "
                                "columns), the most allowed (REGTUNE_MAX_DATA_CELLS)")
        for col, fld in ((spec.target, "dataset.target"), (spec.split.column, "dataset.split.column")):
            if col is not None and col not in names:
                self.close()
                raise DataError.one(fld, f"column {col!r} is not in {spec.path!r} ({len(names)} columns)", col)
        self.feature_names: list[str] = [n for n in names if n not in (spec.target, spec.split.column)]
        self.example_shape: tuple[int, ...] = (len(self.feature_names),)

    def close(self) -> None:
        self._fh.close()

    def _batches(self, columns: list[str]) -> Iterator[Any]:
        return iter(self._file.iter_batches(batch_size=CHUNK_ROWS, columns=columns, use_threads=False))

    def targets(self) -> tuple[np.ndarray, np.ndarray | None, str]:
        spec, target, fold_col = self.spec, self.spec.target or "", self.spec.split.column
        raw: list[np.ndarray] = []
        folds: list[np.ndarray] = []
        for batch in self._batches([target] + ([fold_col] if fold_col else [])):
            column = batch.column(0)
            if column.null_count:
                raise DataError.one("dataset.target", f"rows of {spec.path!r} miss the target; every row needs one",
                                    spec.target)
            raw.append(np.asarray([str(v) for v in column.to_pylist()]))
            if fold_col:
                folds.append(np.asarray([str(v).strip().lower() for v in batch.column(1).to_pylist()]))
        y = np.concatenate(raw)
        task = spec.task or _infer_task(np.unique(y).tolist())  # the distinct values decide as all of them do
        if task == "regression":
            y = _floats(y.tolist(), spec, list(self._file.schema_arrow.names).index(target))
        fold = np.concatenate(folds) if fold_col else None
        if fold is not None and (bad := sorted(set(np.unique(fold)) - set(_FOLDS))):
            raise DataError.one("dataset.split.column", f"values must be train, val or test, but got {bad[:5]}",
                                fold_col)
        return y, fold, task

    def chunks(self) -> Iterator[np.ndarray]:
        import pyarrow as pa

        for name in self.feature_names:
            kind = self._file.schema_arrow.field(name).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                raise DataError.one("dataset.path", f"column {name!r} of {self.spec.path!r} must hold numbers, but "
                                    f"it is {kind}: {_NUMBERS_ONLY}")
        start = 0
        for batch in self._batches(self.feature_names):
            X = np.empty((batch.num_rows, len(self.feature_names)), dtype=np.float64)
            for c, name in enumerate(self.feature_names):
                column = batch.column(c)
                if column.null_count:
                    raise DataError.one("dataset.path", f"column {name!r} of {self.spec.path!r} misses "
                                        f"{column.null_count} values in rows {start} to {start + batch.num_rows - 1}: "
                                        f"{_NUMBERS_ONLY}")
                X[:, c] = column.to_numpy(zero_copy_only=False).astype(np.float64)
                if not np.isfinite(X[:, c]).all():
                    raise DataError.one("dataset.path", f"column {name!r} of {self.spec.path!r} holds NaN or inf in "
                                        f"rows {start} to {start + batch.num_rows - 1}: {_NUMBERS_ONLY}")
            start += batch.num_rows
            yield X


def open_source(spec: DatasetSpec, max_cells: int | None = None) -> ChunkedSource | None:
    """The spec's data as a ``ChunkedSource`` when its format can be read in chunks (Parquet), else None."""
    if spec.size is not None or spec.channels is not None:
        return None  # options of images: the in-memory reader says what they apply to
    if spec.source == "upload" and (data_dir() / UPLOADS / f"{spec.id}.parquet").is_file():
        if not spec.target:
            raise DataError.one("dataset.target", "an uploaded table (parquet) needs 'target', the target column's "
                                "name")
        return ParquetSource(spec.model_copy(update={"source": "parquet", "path": f"{UPLOADS}/{spec.id}.parquet"}),
                             max_cells)
    return None
