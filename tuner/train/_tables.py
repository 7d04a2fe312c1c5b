"""Tables with text categories and missing values: typed column by column, then imputed, one-hot and scaled.

A CSV or Parquet table whose features are all numbers, none missing, is read
as an array and scaled as any other data. One with a text or boolean column,
or a missing value, becomes a ``RawTable``; ``fit_table`` then fits
scikit-learn's ``ColumnTransformer`` on the training rows only (never val or
test): numbers get the median for a missing value and, with
``dataset.standardize``, mean 0 and std 1; categories get the most frequent
level for a missing value and one column per level, at most ``max_levels``
columns with the rarest levels in one ``other`` column (a level never seen in
training goes there too, or, when no level was rare, to no column at all).

What was fitted is kept as a ``TablePrep``: plain numbers and strings, so that
the report can say it and an exported model can encode raw rows the same way
(``TablePrep.encode``) without scikit-learn's pickles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tuner.errors import DataError

__all__ = ["MAX_LEVELS", "MISSING", "ColumnPrep", "RawTable", "TablePrep", "arrow_features", "csv_features",
           "fit_table"]

MISSING = ("", "nan", "na", "n/a", "null", "none")  # a CSV cell (stripped, any case) that holds no value
MAX_LEVELS = 20  # one-hot columns of a category, its 'other' column included (dataset.max_levels)
_BOOLEANS = {"true", "false"}
NUMBER, CATEGORY = "number", "category"


@dataclass(frozen=True)
class RawTable:
    """Feature columns as read: numbers (float64, NaN where missing) or categories (str, None where missing)."""

    names: list[str]
    kinds: list[str]  # NUMBER | CATEGORY
    values: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.values[0]) if self.values else 0

    def missing(self, j: int) -> np.ndarray:
        v = self.values[j]
        return np.isnan(v) if self.kinds[j] == NUMBER else np.asarray([x is None for x in v], dtype=bool)

    def as_objects(self) -> np.ndarray:
        """One object array, NaN for every missing value: what the ColumnTransformer is given."""
        out = np.empty((len(self), len(self.names)), dtype=object)
        for j, v in enumerate(self.values):
            out[:, j] = v
            out[self.missing(j), j] = np.nan
        return out


@dataclass(frozen=True)
class ColumnPrep:
    """What was fitted for one original column (on the training rows)."""

    name: str
    kind: str  # NUMBER | CATEGORY
    missing: int  # values missing in the file, every split: each was filled with ``fill``
    fill: float | str  # the training rows' median (a number) or most frequent level (a category)
    mean: float = 0.0  # a number: the scaling (mean 0, std 1 on the training rows), or 0 and 1 without it
    std: float = 1.0
    levels: list[str] = field(default_factory=list)  # a category: the levels with a column of their own
    other: list[str] = field(default_factory=list)  # a category: training levels rarer than those, in 'other'

    @property
    def width(self) -> int:
        """The model inputs this column becomes."""
        return 1 if self.kind == NUMBER else len(self.levels) + bool(self.other)


@dataclass(frozen=True)
class TablePrep:
    """The fitted preprocessing of a table: per column, in the file's order; the model's inputs follow it."""

    columns: list[ColumnPrep]
    rows: int  # the training rows it was fitted on
    max_levels: int
    standardize: bool

    @property
    def feature_names(self) -> list[str]:
        """The model's inputs: a number keeps its column's name, a category gives ``column=level`` (and ``=other``)."""
        names: list[str] = []
        for c in self.columns:
            if c.kind == NUMBER:
                names.append(c.name)
            else:
                names += [f"{c.name}={level}" for level in c.levels] + ([f"{c.name}=other"] if c.other else [])
        return names

    @property
    def column_of(self) -> list[int]:
        """For each model input, the index of the original column it comes from."""
        return [j for j, c in enumerate(self.columns) for _ in range(c.width)]

    @property
    def scaled(self) -> list[bool]:
        """For each model input, whether it is a standardized number (one-hot columns are left 0/1)."""
        return [c.kind == NUMBER and self.standardize for c in self.columns for _ in range(c.width)]

    def columns_kept(self, features: Sequence[bool]) -> list[bool]:
        """Per original column, whether any of its model inputs is kept (a category: any of its levels)."""
        kept = [False] * len(self.columns)
        for j, keep in zip(self.column_of, features, strict=True):
            kept[j] = kept[j] or bool(keep)
        return kept

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Raw rows (column name → value, as in the file) as the model's inputs (float64), encoded as in training.

        A value that is absent, None, NaN or a missing marker ("", "NA", ...) is filled; a category level
        not seen in training goes to 'other' (or to no column when there is none).

        Raises:
            ValueError: a number column holds something that is not a finite number (naming row and column).
        """
        out = np.zeros((len(rows), len(self.feature_names)), dtype=np.float64)
        for r, row in enumerate(rows):
            at = 0
            for c in self.columns:
                value = _cell(row.get(c.name))
                if c.kind == NUMBER:
                    x = c.fill if value is None else _number(value, r, c.name)
                    out[r, at] = (float(x) - c.mean) / c.std
                else:
                    level = str(c.fill) if value is None else _level(value)
                    if level in c.levels:
                        out[r, at + c.levels.index(level)] = 1.0
                    elif c.other:
                        out[r, at + len(c.levels)] = 1.0
                at += c.width
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: what ``model.json`` and the report record."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TablePrep:
        return cls(columns=[ColumnPrep(**c) for c in raw["columns"]], rows=int(raw["rows"]),
                   max_levels=int(raw["max_levels"]), standardize=bool(raw["standardize"]))


def _cell(value: Any) -> Any:
    """None for a missing value, the value otherwise (a string stripped)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = value.strip()
        return None if value.lower() in MISSING else value
    return value


def _number(value: Any, row: int, column: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or isinstance(value, bool):
        raise ValueError(f"row {row}, column {column!r}: a number column needs a finite number")
    return x


def _level(value: Any) -> str:
    """A category's level as training saw it: text as is, a boolean as true/false (in any case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text.lower() if text.lower() in _BOOLEANS else text


def csv_features(names: list[str], columns: list[list[str]], at: list[int], path: str) -> np.ndarray | RawTable:
    """A CSV's feature columns: an array when every value is a number, else a ``RawTable``.

    A column is numeric when each of its values is a number or missing (``MISSING``), and a category
    otherwise; true and false (any case) are the levels ``true`` and ``false``.

    Args:
        columns: each feature column's cells, in row order (row 0 is line 2 of the file).
        at: each column's index in the file (0-based), for errors.

    Raises:
        DataError: a numeric column holds inf (naming line and column, never the value).
    """
    kinds: list[str] = []
    values: list[np.ndarray] = []
    plain = True
    for cells, col in zip(columns, at, strict=True):
        stripped = [v.strip() for v in cells]
        absent = np.asarray([v.lower() in MISSING for v in stripped], dtype=bool)
        nums = np.full(len(cells), np.nan)
        numeric = True
        for r, v in enumerate(stripped):
            if absent[r]:
                continue
            try:
                nums[r] = float(v)
            except ValueError:
                numeric = False
                break
            if not math.isfinite(nums[r]):
                raise DataError.one("dataset.path", f"line {r + 2}, column {col + 1} of {path!r} must be a finite "
                                    "number (a column of numbers holds no inf)")
        if numeric:
            kinds.append(NUMBER)
            values.append(nums)
            plain = plain and not absent.any()
            continue
        cats = np.empty(len(cells), dtype=object)
        cats[:] = [None if a else _level(v) for v, a in zip(stripped, absent, strict=True)]
        kinds.append(CATEGORY)
        values.append(cats)
        plain = False
    if plain:
        return np.column_stack(values) if values else np.empty((len(columns[0]) if columns else 0, 0))
    return RawTable(names=names, kinds=kinds, values=values)


def arrow_features(table: Any, names: list[str], path: str) -> np.ndarray | RawTable:
    """A Parquet table's feature columns (a ``pyarrow.Table``): an array when all are numbers with none missing.

    Integers and floats are numbers (null or NaN: missing); booleans, strings and dictionaries are categories.

    Raises:
        DataError: a column of another type (dates, lists, ...), or a number column holding inf.
    """
    import pyarrow as pa

    kinds: list[str] = []
    values: list[np.ndarray] = []
    plain = True
    for name in names:
        column = table.column(name)
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            nums = column.to_numpy(zero_copy_only=False).astype(np.float64)
            if np.isinf(nums).any():
                raise DataError.one("dataset.path", f"column {name!r} of {path!r} holds inf (a column of numbers "
                                    "needs finite numbers; a missing value is null or NaN)")
            kinds.append(NUMBER)
            values.append(nums)
            plain = plain and not np.isnan(nums).any()
        elif pa.types.is_boolean(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind) \
                or pa.types.is_dictionary(kind):
            cats = np.empty(len(column), dtype=object)
            cats[:] = [None if v is None else _level(v) for v in column.to_pylist()]
            kinds.append(CATEGORY)
            values.append(cats)
            plain = False
        else:
            raise DataError.one("dataset.path", f"column {name!r} of {path!r} is {kind}: a feature must be a "
                                "number, a boolean or text (a category)")
    if plain:
        return np.column_stack(values) if values else np.empty((table.num_rows, 0))
    return RawTable(names=names, kinds=kinds, values=values)


def fit_table(table: RawTable, train: np.ndarray, *, standardize: bool, max_levels: int,
              max_cells: int | None = None) -> tuple[np.ndarray, TablePrep]:
    """Fit the preprocessing on the rows ``train`` only, and apply it to every row.

    Args:
        max_cells: the most rows × model inputs the encoded table may hold (checked before it is encoded).

    Returns:
        The model's inputs for every row (float64, the table's row order) and what was fitted.

    Raises:
        DataError: a column has no value at all in the training rows (nothing to fill it with), or the one-hot
            encoded table would hold more than ``max_cells`` values.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    for j, name in enumerate(table.names):
        if table.missing(j)[train].all():
            raise DataError.one("dataset.path", f"column {name!r} has no value in the {len(train)} training rows: "
                                "there is nothing to fill its missing values with (drop the column)")
    steps: list[tuple[str, Pipeline, list[int]]] = []
    for j, kind in enumerate(table.kinds):
        if kind == NUMBER:
            pipe = Pipeline([("impute", SimpleImputer(strategy="median"))]
                            + ([("scale", StandardScaler())] if standardize else []))
        else:
            pipe = Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                             ("onehot", OneHotEncoder(max_categories=max_levels, sparse_output=False,
                                                      handle_unknown="infrequent_if_exist"))])
        steps.append((f"c{j}", pipe, [j]))
    raw = table.as_objects()
    transformer = ColumnTransformer(steps, sparse_threshold=0.0)
    transformer.fit(raw[train])
    columns = []
    for j, (name, kind) in enumerate(zip(table.names, table.kinds, strict=True)):
        pipe = transformer.named_transformers_[f"c{j}"]
        fill = pipe.named_steps["impute"].statistics_[0]
        n_missing = int(table.missing(j).sum())
        if kind == NUMBER:
            scaler = pipe.named_steps.get("scale")
            mean, std = (float(scaler.mean_[0]), float(scaler.scale_[0])) if scaler is not None else (0.0, 1.0)
            columns.append(ColumnPrep(name=name, kind=kind, missing=n_missing, fill=float(fill), mean=mean, std=std))
        else:
            encoder = pipe.named_steps["onehot"]
            rare = encoder.infrequent_categories_[0]
            other = [str(v) for v in rare] if rare is not None else []
            levels = [str(v) for v in encoder.categories_[0] if str(v) not in other]
            columns.append(ColumnPrep(name=name, kind=kind, missing=n_missing, fill=str(fill), levels=levels,
                                      other=other))
    prep = TablePrep(columns=columns, rows=len(train), max_levels=max_levels, standardize=standardize)
    width = sum(c.width for c in columns)
    if max_cells is not None and len(table) * width > max_cells:
        raise DataError.one("dataset.max_levels", f"one-hot encoded, the table is {len(table)} rows × {width} "
                            f"inputs, more than the {max_cells} values allowed (REGTUNE_MAX_DATA_CELLS); lower "
                            "max_levels", max_levels)
    return np.asarray(transformer.transform(raw), dtype=np.float64), prep
