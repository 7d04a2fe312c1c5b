"""Backends by name: where a stage's trials run. Threads and Ray are peers behind one signature.

A backend is a ``StageExecutor``: it takes the job's stages, an iterator of ``StageRun``
(each hands out its budgeted trials and takes back their outcomes), the search data
and the storage URL, and returns when the iterator has no stage left. It takes the
next stage only once every trial of the one before is told: the thread backend runs
each stage on threads of its own, the Ray backend runs all of them in one Tune run,
whose workers then live from stage to stage. The registry
(``tuner.registry.BACKENDS``) names each backend's executor, so a heavy backend
(Ray) is imported only when a job asks for it.
"""

from __future__ import annotations

from tuner.backends._batches import torch_threads, trials_per_batch
from tuner.registry import BACKENDS, StageExecutor

__all__ = ["BACKENDS", "StageExecutor", "executor_for", "torch_threads", "trials_per_batch"]


def executor_for(name: str) -> StageExecutor:
    """The stage executor of backend ``name``.

    Raises:
        ValueError: an unknown name (the message lists every valid one).
    """
    return BACKENDS.load(name)
