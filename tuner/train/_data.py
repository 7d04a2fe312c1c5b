"""Datasets: scikit-learn's bundled sets, synthetic problems and CSV files, split and scaled.

Everything is held in memory as tensors (data over ``REGTUNE_MEMORY_DATA_BYTES``
is streamed from disk instead: ``tuner.train._stream``). Standardization is fitted on
the training split only, so nothing of the validation or test split leaks into it.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import math
import os
import stat
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from tuner.errors import DataError
from tuner.spec import DatasetSpec, path_rule
from tuner.train._images import read_images
from tuner.train._tables import MAX_LEVELS, MISSING, RawTable, TablePrep, arrow_features, csv_features, fit_table

__all__ = ["UPLOADS", "UPLOAD_FORMATS", "Dataset", "Split", "cross_folds", "data_dir", "load_in_memory",
           "targets_and_rows", "upload_format"]

_SKLEARN_LOADERS = {  # scikit-learn's loader per name; scikit-learn is imported when data is loaded (about 1 s),
    "digits": "load_digits",  # not by every process that imports tuner (a Ray worker gets its data loaded)
    "digits_images": "load_digits",
    "breast_cancer": "load_breast_cancer",
    "wine": "load_wine",
    "iris": "load_iris",
    "diabetes": "load_diabetes",
}
_FOLDS = ("train", "val", "test")
_MAX_LINE_BYTES = 16 * 2**20
_MISSING = MISSING


@dataclass(frozen=True)
class Split:
    """One split: features X (float32) and targets y (int64 classes or float32 values)."""

    X: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.X.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A dataset split three ways. ``test`` is None in the copy the search works on."""

    task: str
    feature_names: list[str]
    n_outputs: int
    train: Split
    val: Split
    test: Split | None
    target_scale: float = 1.0  # regression: std of the raw target (losses are in standardized units)
    informative: list[str] = field(default_factory=list)  # synthetic data: the features that matter
    # what it takes to feed the model new data the same way: the classes (output i is classes[i]),
    # the standardization fitted on the training split, the regression target's mean
    classes: list[str | int | float] = field(default_factory=list)
    feature_mean: list[float] = field(default_factory=list)
    feature_std: list[float] = field(default_factory=list)
    target_mean: float = 0.0
    folds: tuple[Dataset, ...] = ()  # cross-validation: train holds every non-test row, val none
    # a table with categories or missing values: what was imputed, one-hot and scaled (tuner.train._tables)
    preprocessing: TablePrep | None = None
    scaling: str = "feature"  # standardized per feature, or (images) per "channel": feature_mean holds C values

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, as a model's factory is told it."""
        return tuple(int(d) for d in self.train.X.shape[1:])

    @property
    def columns(self) -> list[str]:
        """The data's own columns: a table's before one-hot encoding, otherwise the feature names."""
        return [c.name for c in self.preprocessing.columns] if self.preprocessing else self.feature_names

    def columns_kept(self, features: Sequence[bool]) -> list[bool]:
        """Per column of ``columns``, whether any of its features is kept (a category: any of its levels)."""
        return self.preprocessing.columns_kept(features) if self.preprocessing else [bool(k) for k in features]

    def without_test(self) -> Dataset:
        """The same data with the test split removed: all the search may see."""
        return replace(self, test=None)


def data_dir() -> Path:
    """Where CSV paths are resolved: REGTUNE_DATA_DIR, or a ``data`` folder in the working directory.

    Never the working directory itself: it holds ``.env`` files, databases and the spec files.
    """
    return Path(os.environ.get("REGTUNE_DATA_DIR") or "data").resolve()


def load_in_memory(spec: DatasetSpec, seed: int, max_cells: int | None = None) -> Dataset:
    """Load, split and (optionally) standardize the dataset a spec names, every split in memory.

    Args:
        max_cells: the most rows × columns a CSV file may hold (checked while it is read).

    Raises:
        DataError: the file is missing, escapes REGTUNE_DATA_DIR, holds unusable values, or its one-hot encoding
            is over ``max_cells``.
    """
    informative: list[str] = []
    folds: np.ndarray | None = None
    X: np.ndarray | RawTable
    per_channel = spec.source == "images" or (spec.source == "upload" and upload_format(spec.id or "") == "zip")
    if spec.source == "sklearn":
        from sklearn import datasets as skdatasets

        bunch = getattr(skdatasets, _SKLEARN_LOADERS[spec.name or ""])()
        X, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
        if spec.name == "digits_images":
            X = np.asarray(bunch.images, dtype=np.float64)[:, None, :, :]  # (n, 1, 8, 8)
        names = [str(n) for n in getattr(bunch, "feature_names", [])] or [f"x{i}" for i in range(X.shape[1])]
        task = spec.known_task or "classification"
    elif spec.source == "synthetic":
        X, y, names, informative = _synthetic(spec, seed)
        task = spec.task or "classification"
    elif spec.source == "npz":
        X, y, names, folds, task = _read_npz(spec, max_cells)
    elif per_channel:
        archive = data_dir() / UPLOADS / f"{spec.id}.zip" if spec.source == "upload" else None
        X, y, names, folds, task = read_images(spec, data_dir(), max_cells, archive=archive)
    elif spec.source == "upload":
        X, y, names, folds, task = _read_upload(spec, max_cells)
    else:
        X, y, names, folds, task = _read_csv(spec, max_cells)
    return _assemble(spec, seed, X, y, names, folds, task, informative, max_cells, per_channel)


def _synthetic(spec: DatasetSpec, seed: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    from sklearn import datasets as skdatasets

    n, d, k = spec.n_samples or 1000, spec.n_features or 20, spec.n_informative or 5
    noise = spec.noise or 0.0
    if spec.task == "regression":
        X, y = skdatasets.make_regression(n_samples=n, n_features=d, n_informative=k, shuffle=False,
                                          random_state=seed)
        y = y + noise * float(np.std(y)) * np.random.default_rng(seed).standard_normal(n)
    else:
        X, y = skdatasets.make_classification(
            n_samples=n, n_features=d, n_informative=k, n_redundant=0, n_repeated=0,
            n_classes=spec.n_classes or 2, n_clusters_per_class=spec.clusters_per_class, flip_y=noise,
            shuffle=False, random_state=seed,
        )
    width = len(str(d - 1))
    names = [f"x{i:0{width}d}" for i in range(d)]
    return X, y, names, names[:k]  # shuffle=False puts the informative features first


def _open_csv(spec: DatasetSpec) -> BinaryIO:
    """Open the spec's CSV file for reading: a regular file inside the data dir, never a dotfile.

    The file is opened without blocking and checked before anything is read: a FIFO
    would block ``open()`` forever, and a device or folder is no data.
    """
    root = data_dir()
    if (broken := path_rule(spec.path or "")) is not None:
        raise DataError.one("dataset.path", broken, spec.path)
    path = (root / (spec.path or "")).resolve()
    if not path.is_relative_to(root):
        raise DataError.one("dataset.path", f"must stay inside REGTUNE_DATA_DIR, but got {spec.path!r}", spec.path)
    if any(part.startswith(".") for part in path.relative_to(root).parts):  # a link to a dotfile
        raise DataError.one("dataset.path", f"must name no hidden file or folder, but {spec.path!r} leads to one",
                            spec.path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError.one("dataset.path", f"cannot read {spec.path!r} in {root} (REGTUNE_DATA_DIR, or a 'data' "
                            f"folder in the working directory when it is unset): {exc.strerror}", spec.path) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError.one("dataset.path", f"must be a regular file, but {spec.path!r} is not (a folder, a FIFO "
                            "or a device)", spec.path)
    return open(fd, "rb")


def _read_npz(spec: DatasetSpec, max_cells: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None, str]:
    """Arrays ``X`` (first axis: examples, any shape after it), ``y`` and optionally ``fold``; no pickles.

    The file is opened as a CSV is (a regular file inside the data dir, never a dotfile).
    """
    try:
        with _open_csv(spec) as fh, np.load(fh, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError.one("dataset.path", f"cannot read {spec.path!r} as an .npz of plain arrays: {exc}",
                            spec.path) from None
    for key in ("X", "y"):
        if key not in arrays:
            raise DataError.one("dataset.path", f"{spec.path!r} needs an array {key!r}; it holds "
                                f"{', '.join(arrays) or 'none'}", spec.path)
    X, y, fold = arrays["X"], arrays["y"], arrays.get("fold")
    if max_cells is not None and X.size > max_cells:
        raise DataError.one("dataset.path", f"{spec.path!r} holds more than {max_cells} values in X, the most "
                            "allowed (REGTUNE_MAX_DATA_CELLS)")
    n = X.shape[0] if X.ndim else 0
    if X.ndim < 2 or y.shape != (n,) or (fold is not None and fold.shape != (n,)):
        raise DataError.one("dataset.path", f"X must have an examples axis and y (and fold) one value per example, "
                            f"but got X {X.shape}, y {y.shape}" + (f", fold {fold.shape}" if fold is not None else ""))
    if X.dtype.kind not in "biuf" or not np.isfinite(X).all():
        raise DataError.one("dataset.path", f"X must hold finite numbers, but its dtype is {X.dtype}"
                            + ("" if X.dtype.kind not in "biuf" else " and it holds NaN or inf"))
    folds = None
    if fold is not None:
        folds = np.asarray([(v.decode() if isinstance(v, bytes) else str(v)).strip().lower() for v in fold.tolist()])
        bad = sorted(set(folds) - set(_FOLDS))
        if bad:
            raise DataError.one("dataset.path", f"fold values must be train, val or test, but got {bad[:5]}")
    task = spec.task or _infer_task([str(v) for v in y.tolist()])
    if task == "regression" and y.dtype.kind not in "biuf":
        raise DataError.one("dataset.path", f"a regression target must be numeric, but y has dtype {y.dtype}")
    width = len(str(int(np.prod(X.shape[1:])) - 1))
    names = [f"x{i:0{width}d}" for i in range(int(np.prod(X.shape[1:])))]
    return X.astype(np.float64), y if task == "classification" else y.astype(np.float64), names, folds, task


UPLOADS = "uploads"  # the folder under REGTUNE_DATA_DIR where POST /datasets stores files, as <sha256>.<format>
UPLOAD_FORMATS = ("csv", "npz", "parquet", "zip")  # zip: a folder of images, one subfolder per class


def upload_format(dataset_id: str) -> str | None:
    """The format of the stored upload ``dataset_id``, or None when there is none."""
    return next((f for f in UPLOAD_FORMATS if (data_dir() / UPLOADS / f"{dataset_id}.{f}").is_file()), None)


def _read_upload(spec: DatasetSpec, max_cells: int | None = None
                 ) -> tuple[np.ndarray | RawTable, np.ndarray, list[str], np.ndarray | None, str]:
    """An uploaded file, read as the source of its format reads it (the same rules, the same numbers)."""
    for fmt in UPLOAD_FORMATS:
        path = f"{UPLOADS}/{spec.id}.{fmt}"
        if not (data_dir() / path).is_file():
            continue
        if fmt != "npz" and not spec.target:
            raise DataError.one("dataset.target", f"an uploaded table ({fmt}) needs 'target', the target column's "
                                "name")
        if spec.size is not None or spec.channels is not None:
            raise DataError.one("dataset.size" if spec.size is not None else "dataset.channels",
                                f"applies to an uploaded zip of images, but upload {spec.id} is {fmt}")
        if fmt == "npz" and (spec.target or spec.split.column or spec.max_levels):
            raise DataError.one("dataset.target" if spec.target else "dataset.split.column" if spec.split.column
                                else "dataset.max_levels",
                                f"applies to an uploaded CSV, but upload {spec.id} is {fmt}")
        local = spec.model_copy(update={"source": fmt, "path": path})
        reader = {"csv": _read_csv, "npz": _read_npz, "parquet": _read_parquet}[fmt]
        return reader(local, max_cells)
    raise DataError.one("dataset.id", f"no upload has id {spec.id!r} (in {data_dir() / UPLOADS})", spec.id)


def _read_parquet(spec: DatasetSpec, max_cells: int | None = None
                  ) -> tuple[np.ndarray | RawTable, np.ndarray, list[str], np.ndarray | None, str]:
    """A Parquet table, read by the CSV reader's rules: features (numbers, or categories and nulls: a
    ``RawTable``), a target, optionally a split column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with _open_csv(spec) as fh:
            pfile = pq.ParquetFile(fh)
            rows, names = pfile.metadata.num_rows, list(pfile.schema_arrow.names)
            if max_cells is not None and rows * len(names) > max_cells:
                raise DataError.one("dataset.path", f"{spec.path!r} holds more than {max_cells} cells (rows × "
                                    "columns), the most allowed (REGTUNE_MAX_DATA_CELLS)")
            table = pfile.read()
    except (pa.ArrowException, OSError) as exc:
        raise DataError.one("dataset.path", f"cannot read {spec.path!r} as Parquet: {exc}") from None
    fold_col = spec.split.column
    for col, fld in ((spec.target, "dataset.target"), (fold_col, "dataset.split.column")):
        if col is not None and col not in names:
            raise DataError.one(fld, f"column {col!r} is not in {spec.path!r} ({len(names)} columns)", col)
    features = [n for n in names if n not in (spec.target, fold_col)]
    X = arrow_features(table, features, spec.path or "")
    target = table.column(spec.target or "")
    if target.null_count:
        raise DataError.one("dataset.target", f"{target.null_count} rows of {spec.path!r} miss the target; every "
                            "row needs one", spec.target)
    raw_y = [str(v) for v in target.to_pylist()]
    task = spec.task or _infer_task(raw_y)
    y = np.asarray(raw_y) if task == "classification" else _floats(raw_y, spec, names.index(spec.target or ""))
    folds = None
    if fold_col is not None:
        folds = np.asarray([str(v).strip().lower() for v in table.column(fold_col).to_pylist()])
        if bad := sorted(set(folds) - set(_FOLDS)):
            raise DataError.one("dataset.split.column", f"values must be train, val or test, but got {bad[:5]}",
                                fold_col)
    return X, y, features, folds, task


def _lines(fh: BinaryIO, spec: DatasetSpec) -> Iterator[str]:
    """The file's lines as text, decoded one by one so that an error can name its line."""
    for number in itertools.count(1):
        raw = fh.readline(_MAX_LINE_BYTES)
        if not raw:
            return
        if len(raw) == _MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise DataError.one("dataset.path", f"line {number} of {spec.path!r} is longer than "
                                f"{_MAX_LINE_BYTES // 2**20} MiB")
        try:
            yield raw.removeprefix(codecs.BOM_UTF8 if number == 1 else b"").decode("utf-8")
        except UnicodeDecodeError:
            raise DataError.one("dataset.path", f"{spec.path!r} must be UTF-8 text, but line {number} is "
                                "not") from None


def _read_rows(spec: DatasetSpec, max_cells: int | None) -> list[list[str]]:
    """Every row of the CSV file; errors name the line, never the file's content."""
    rows: list[list[str]] = []
    with _open_csv(spec) as fh:
        reader = csv.reader(_lines(fh, spec))
        try:
            for row in reader:
                if not row:
                    continue  # a blank line (a trailing one, mostly) holds no row
                rows.append(row)
                if len(row) != len(rows[0]):
                    raise DataError.one("dataset.path", f"line {reader.line_num} of {spec.path!r} has {len(row)} "
                                        f"fields, the header {len(rows[0])}")
                if max_cells is not None and len(rows) * len(row) > max_cells:
                    raise DataError.one("dataset.path", f"{spec.path!r} holds more than {max_cells} cells (rows × "
                                        "columns), the most allowed (REGTUNE_MAX_DATA_CELLS)")
        except csv.Error as exc:
            too_large = f"a field is larger than {csv.field_size_limit() // 1024} kB"
            rule = too_large if "field limit" in str(exc) else "it is not valid CSV"
            raise DataError.one("dataset.path", f"cannot read line {reader.line_num} of {spec.path!r}: "
                                f"{rule}") from None
    return rows


def _read_csv(spec: DatasetSpec, max_cells: int | None = None
              ) -> tuple[np.ndarray | RawTable, np.ndarray, list[str], np.ndarray | None, str]:
    rows = _read_rows(spec, max_cells)
    if len(rows) < 2:
        raise DataError.one("dataset.path", f"{spec.path!r} needs a header row and data rows")
    header, body = rows[0], rows[1:]
    fold_col = spec.split.column
    for col, fld in ((spec.target, "dataset.target"), (fold_col, "dataset.split.column")):
        if col is not None and col not in header:
            raise DataError.one(fld, f"column {col!r} is not in the header of {spec.path!r} (line 1, "
                                f"{len(header)} columns)", col)
    t_idx = header.index(spec.target or "")
    f_idx = header.index(fold_col) if fold_col else None
    feat_idx = [i for i in range(len(header)) if i not in (t_idx, f_idx)]
    X = csv_features([header[i] for i in feat_idx], [[row[i] for row in body] for i in feat_idx], feat_idx,
                     spec.path or "")
    raw_y = [row[t_idx].strip() for row in body]
    for r, value in enumerate(raw_y, start=2):
        if value.lower() in _MISSING:
            raise DataError.one("dataset.target", f"line {r}, column {t_idx + 1} of {spec.path!r}: the target "
                                "is missing (empty, NaN or NA); every row needs one", spec.target)
    task = spec.task or _infer_task(raw_y)
    y = np.asarray(raw_y) if task == "classification" else _floats(raw_y, spec, t_idx)
    folds = np.asarray([row[f_idx].strip().lower() for row in body]) if f_idx is not None else None
    if folds is not None:
        for r, fold in enumerate(folds, start=2):
            if fold not in _FOLDS:
                raise DataError.one("dataset.split.column", f"values must be train, val or test, but line {r}, "
                                    f"column {(f_idx or 0) + 1} of {spec.path!r} is not", fold_col)
    return X, y, [header[i] for i in feat_idx], folds, task


def _floats(values: list[str], spec: DatasetSpec, column: int) -> np.ndarray:
    out = np.empty(len(values))
    for r, v in enumerate(values, start=2):
        try:
            out[r - 2] = float(v)
        except ValueError:
            out[r - 2] = np.nan
        if not math.isfinite(out[r - 2]):
            raise DataError.one("dataset.target", f"a regression target must be a finite number, but line {r}, "
                                f"column {column + 1} of {spec.path!r} is not", spec.target)
    return out


def _infer_task(values: list[str]) -> str:
    """Classification for labels (text, or at most 20 distinct integers); regression otherwise."""
    try:
        nums = np.asarray([float(v) for v in values])
    except ValueError:
        return "classification"
    integral = bool(np.all(nums == np.round(nums)))
    return "classification" if integral and len(np.unique(nums)) <= 20 else "regression"


def targets_and_rows(spec: DatasetSpec, seed: int, y: np.ndarray, folds: np.ndarray | None, task: str
                     ) -> tuple[np.ndarray, list[str | int | float], int, dict[str, np.ndarray]]:
    """The targets encoded (class indices, or floats), the classes, the outputs, and each split's rows (sorted).

    Only the targets decide the split: data streamed from disk (``tuner.train._stream``) is split
    by the same rows as the same data in memory.
    """
    classes: list[str | int | float] = []
    if task == "classification":
        labels, y = np.unique(y, return_inverse=True)
        classes = [v.item() if isinstance(v, np.generic) else v for v in labels]
        if len(classes) < 2:
            raise DataError.one("dataset.target", f"classification needs at least 2 classes, got {len(classes)}")
        n_outputs = len(classes)
    else:
        y, n_outputs = y.astype(np.float64), 1
    idx = {f: np.flatnonzero(folds == f) for f in _FOLDS} if folds is not None else _split(spec, seed, y, task)
    for f, rows in idx.items():
        if len(rows) == 0 and not (f == "val" and spec.split.folds):
            raise DataError.one("dataset.split", f"the {f} split is empty")
    return y, classes, n_outputs, idx


def _assemble(spec: DatasetSpec, seed: int, X: np.ndarray | RawTable, y: np.ndarray, names: list[str],
              folds: np.ndarray | None, task: str, informative: list[str], max_cells: int | None = None,
              per_channel: bool = False) -> Dataset:
    y, classes, n_outputs, idx = targets_and_rows(spec, seed, y, folds, task)
    y_mu = 0.0
    tr = idx["train"]
    scale, target_scale = spec.standardize, 1.0
    prep = None
    if isinstance(X, RawTable):  # categories or missing values: imputed, one-hot and scaled, fitted on train
        X, prep = fit_table(X, tr, standardize=scale, max_levels=spec.max_levels or MAX_LEVELS, max_cells=max_cells)
        names = prep.feature_names
        mu = np.asarray([c.mean for c in prep.columns for _ in range(c.width)])
        sd = np.asarray([c.std if c.kind == "number" else 1.0 for c in prep.columns for _ in range(c.width)])
    else:
        axes = (0, *range(2, X.ndim)) if per_channel else (0,)  # per feature (an npz's pixel), or per channel
        shape = (X.shape[1],) + (1,) * (X.ndim - 2) if per_channel else X.shape[1:]
        mu = X[tr].mean(axis=axes).reshape(shape) if scale else np.zeros(shape)
        sd = X[tr].std(axis=axes).reshape(shape) if scale else np.ones(shape)
        sd[sd == 0] = 1.0
        X = (X - mu) / sd
    if task == "regression" and scale:
        y_mu, target_scale = float(y[tr].mean()), float(y[tr].std() or 1.0)
        y = (y - y_mu) / target_scale
    y_dtype = torch.long if task == "classification" else torch.float32

    def part(rows: np.ndarray) -> Split:
        return Split(torch.as_tensor(X[rows], dtype=torch.float32), torch.as_tensor(y[rows], dtype=y_dtype))

    data = Dataset(task=task, feature_names=names, n_outputs=n_outputs, train=part(tr), val=part(idx["val"]),
                   test=part(idx["test"]), target_scale=target_scale, informative=informative, classes=classes,
                   feature_mean=[float(v) for v in mu.ravel()], feature_std=[float(v) for v in sd.ravel()],
                   target_mean=y_mu, preprocessing=prep, scaling="channel" if per_channel else "feature")
    if spec.split.folds:
        if len(tr) < 2 * spec.split.folds:
            raise DataError.one("dataset.split.folds", f"{spec.split.folds} folds need at least "
                                f"{2 * spec.split.folds} non-test rows, but there are {len(tr)}")
        data = replace(data, folds=cross_folds(data, spec.split.folds, seed, scale))
    return data


def _split(spec: DatasetSpec, seed: int, y: np.ndarray, task: str) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    val, test = spec.split.val or 0.15, spec.split.test or 0.15
    rows = np.arange(len(y))

    def cut(pool: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray]:
        strat = y[pool] if task == "classification" else None
        try:
            a, b = train_test_split(pool, test_size=frac, random_state=seed, stratify=strat)
        except ValueError:  # a class too rare to stratify: split at random rather than fail
            try:
                a, b = train_test_split(pool, test_size=frac, random_state=seed)
            except ValueError:
                raise DataError.one("dataset.split", f"{len(y)} data rows are too few to split into train, val "
                                    f"and test (val={val}, test={test}); each needs at least one row") from None
        return np.sort(a), np.sort(b)

    rest, test_rows = cut(rows, test)
    if spec.split.folds:  # the folds are cut from every non-test row later
        return {"train": rest, "val": np.array([], dtype=np.int64), "test": test_rows}
    train_rows, val_rows = cut(rest, val / (1.0 - test))
    return {"train": train_rows, "val": val_rows, "test": test_rows}


def cross_folds(data: Dataset, k: int, seed: int, standardize: bool) -> tuple[Dataset, ...]:
    """``k`` train/val datasets over ``data.train``'s rows (cross-validation).

    Each fold is standardized again on its own training rows, so nothing of its
    validation rows leaks into the scaling (the target's scale, a regression's
    unit of loss, stays the one of all non-test rows, so fold losses compare).
    A table's one-hot columns stay 0/1; its imputation and levels stay those
    fitted on every non-test row.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    X, y = data.train.X, data.train.y
    labels = y.numpy() if data.task == "classification" else None
    try:
        pairs = list((StratifiedKFold if labels is not None else KFold)(k, shuffle=True, random_state=seed)
                     .split(X.numpy(), labels))
    except ValueError:  # a class with fewer rows than folds: unstratified folds rather than none
        pairs = list(KFold(k, shuffle=True, random_state=seed).split(X.numpy()))
    folds = []
    for fit_rows, val_rows in pairs:
        fit, val = torch.as_tensor(fit_rows), torch.as_tensor(val_rows)
        Xf = X
        if standardize:
            dims = (0, *range(2, X.ndim)) if data.scaling == "channel" else (0,)
            mu, sd = X[fit].mean(dim=dims, keepdim=True), X[fit].std(dim=dims, unbiased=False, keepdim=True)
            if data.preprocessing is not None:
                onehot = ~torch.as_tensor(data.preprocessing.scaled)
                mu, sd = mu.masked_fill(onehot, 0.0), sd.masked_fill(onehot, 1.0)
            Xf = (X - mu) / torch.where(sd > 0, sd, torch.ones_like(sd))
        folds.append(replace(data, train=Split(Xf[fit], y[fit]), val=Split(Xf[val], y[val]), test=None, folds=()))
    return tuple(folds)
