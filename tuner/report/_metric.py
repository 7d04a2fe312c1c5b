"""The held-out test metric of a report row: accuracy for a classification, RMSE for a regression."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["held_out_metric"]


def held_out_metric(row: Mapping[str, Any]) -> tuple[str, float | None]:
    """``("test_acc", value)`` for a classification's row, ``("test_rmse", value)`` for a regression's.

    Args:
        row: the report's ``baseline`` or ``chosen``.

    Returns:
        The metric's name and its value (None where the row has none).
    """
    name = "test_acc" if "test_acc" in row else "test_rmse"
    return name, row.get(name)
