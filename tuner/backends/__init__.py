"""Backends by name: where a stage's trials run. Threads and Ray are peers behind one signature.

A backend is a ``StageExecutor``: it takes the ``StageRun`` (which hands out the
budgeted trials and takes back their outcomes), the search data and the storage
URL, and returns when the stage has no trial left to hand out. The registry maps
a name to a loader, so a heavy backend (Ray) is imported only when a job asks for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from tuner.search import StageRun
from tuner.train import Dataset

__all__ = ["BACKENDS", "StageExecutor", "executor_for"]

StageExecutor = Callable[[StageRun, Dataset, str], None]
"""Runs a stage's trials (the ``optuna`` backend: threads; the ``ray`` backend: Ray Tune)."""


def _load(module: str, name: str) -> Callable[[], StageExecutor]:
    def load() -> StageExecutor:
        executor: StageExecutor = getattr(importlib.import_module(module), name)
        return executor

    return load


BACKENDS: dict[str, Callable[[], StageExecutor]] = {
    "optuna": _load("tuner.backends._threads", "run_threads"),
    "ray": _load("tuner.backends.ray", "run_ray"),  # Ray is heavy: imported only when asked for
}
"""Every backend by name, each a loader of its executor."""


def executor_for(name: str) -> StageExecutor:
    """The stage executor of backend ``name``.

    Raises:
        ValueError: an unknown name (the message lists every valid one).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends are: {', '.join(BACKENDS)}")
    return BACKENDS[name]()
