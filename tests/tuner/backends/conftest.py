"""Backend fixtures: a local Ray cluster, started once per module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster for the module, whatever RAY_ADDRESS says: the tests' SQLite files are local."""
    import ray

    from tuner.backends.ray import ensure_ray

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        started = not ray.is_initialized()
        ensure_ray()
        yield
        if started:
            ray.shutdown()
