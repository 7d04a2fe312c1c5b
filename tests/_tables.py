"""A small generated table for the tests of tables: numbers with gaps, text categories, booleans, string labels."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

CITIES = ["paris", "rome", "oslo", "lima", "kyiv", "baku"]


def houses(n: int = 120, fold: bool = False) -> list[dict[str, Any]]:
    """Rows of a small table: a number with gaps, a city (text, some NA), a boolean with gaps, a string label.

    The label depends on the city and the age, so a model has something to learn; with ``fold``, a split column
    puts rows 0-79 in train, 80-99 in val and 100-119 in test.
    """
    rows = []
    for i in range(n):
        age = None if i % 11 == 3 else 20 + (i * 7) % 50
        city = None if i % 13 == 5 else CITIES[0 if i % 4 == 0 else (i * 5) % 6]
        member = [True, False, None][i % 3]
        income = round(50 + 10 * np.sin(i * 1.7), 2)
        label = "yes" if city == "paris" or (age is not None and age > 50) else "no"
        row = {"age": age, "city": city, "member": member, "income": income, "label": label}
        if fold:
            row["fold"] = "train" if i < 80 else ("val" if i < 100 else "test")
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """As a person's export writes it: NA for a missing city, empty cells elsewhere, True/False booleans."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("NA" if k == "city" else "") if v is None else v for k, v in row.items()})
    path.write_text(out.getvalue())


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), path, row_group_size=50)
