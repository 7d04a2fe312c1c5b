"""The Pareto front over two objectives to be minimized (the report's val loss vs gap, and its plot)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["pareto_front"]

T = TypeVar("T")


def pareto_front(items: Sequence[T], key: Callable[[T], tuple[float, float]]) -> list[T]:
    """The items no other item beats on both objectives (at least as good on each, better on one).

    Args:
        key: an item's two objectives, both to be minimized: ``(val_loss, gap)``.

    Returns:
        The front, sorted by the first objective, then the second.
    """
    points = [key(item) for item in items]
    front = [item for item, p in zip(items, points, strict=True) if not any(
        q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)]
    return sorted(front, key=key)
