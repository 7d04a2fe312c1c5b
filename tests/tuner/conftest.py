"""Tiny specs for the library's tests: small data, few epochs, few trials."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"source": "sklearn", "name": "breast_cancer", "split": {"val": 0.2, "test": 0.2}},
    "model": {"kind": "mlp", "hidden": [16]},
    "training": {"epochs": 4, "batch_size": 64, "lr": 0.01},
    "search": {
        "sampler": "tpe",
        "pruner": "none",
        "space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}, "dropout": {"low": 0.0, "high": 0.5}},
        "stages": [
            {"name": "baseline", "params": [], "trials": 1},
            {"name": "l2", "params": ["l2"], "trials": 3},
            {"name": "dropout", "params": ["dropout"], "trials": 3},
        ],
    },
    "report": {"top_k": 2, "seeds": 1},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, recursively for mappings; a None value removes the key."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture
def tiny() -> Callable[..., dict[str, Any]]:
    """A factory: ``tiny(search={"sampler": "random"})`` is the tiny spec with that part replaced."""
    return lambda **over: merge(TINY, over)
