"""Backends by name: where a stage's trials run."""

from __future__ import annotations

from tuner.stages import StageExecutor, run_threads

__all__ = ["BACKENDS", "executor_for"]


def _ray() -> StageExecutor:
    from tuner.ray_backend import run_ray  # Ray is heavy: imported only when asked for

    return run_ray


BACKENDS = {"optuna": lambda: run_threads, "ray": _ray}


def executor_for(name: str) -> StageExecutor:
    """The stage executor of backend ``name``.

    Raises:
        ValueError: an unknown name (the message lists every valid one).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends are: {', '.join(BACKENDS)}")
    return BACKENDS[name]()
