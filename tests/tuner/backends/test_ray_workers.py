"""The workers of the local Ray cluster regtune starts: started with regtune imported, and the first trial of a
job runs on one of them instead of a worker started for it (about 3 s later, measured on the bench's job).

A module of its own: it needs a fresh cluster, which the other Ray tests' module fixture does not give.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from _backends import Tiny, descendants, ray_spec, trials_of, tune_results
from optuna.trial import TrialState

from tuner import run_job
from tuner.backends.ray._driver import WARM_WORKERS, WORKER_MODULES


def idle_workers() -> dict[int, bool]:
    """The cluster's idle workers, and whether each has imported torch (libtorch mapped)."""
    found = {}
    for pid, title in descendants():
        if title.startswith("ray::IDLE"):
            try:
                found[pid] = "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()
            except OSError:
                continue
    return found


@pytest.mark.ray
def test_a_fresh_local_clusters_first_trial_runs_on_a_worker_that_started_with_regtune_imported(
        tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from tuner.backends.ray import ensure_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():  # another module's cluster, still up in this process
        ray.shutdown()
    ensure_ray()
    try:
        deadline, last = time.monotonic() + 120, None
        while time.monotonic() < deadline:  # the workers start, then import regtune: until all have, twice in a row
            idle = idle_workers()
            if idle and all(idle.values()) and idle == last:
                break
            last = idle
            time.sleep(1.0)
        assert idle and all(idle.values()), f"the fresh cluster's idle workers (pid: torch imported): {idle}"
        assert len(idle) <= WARM_WORKERS
        warm = list(idle)

        grids = tune_results(monkeypatch)
        url = f"sqlite:///{tmp_path}/x.db"
        run_job(ray_spec(tiny, epochs=2, parallelism=1, stages=[{"name": "baseline", "params": [], "trials": 1}]),
                storage=url)

        [grid] = grids
        assert [t.state for t in trials_of(url, "tiny/baseline")] == [TrialState.COMPLETE]
        assert grid[0].metrics["pid"] in warm  # Tune's actor took a started worker, not one started for it
    finally:
        ray.shutdown()


def test_the_workers_preload_what_a_first_trial_imports_to_open_the_storage() -> None:
    """``WORKER_MODULES``, imported in a fresh interpreter as a worker imports them, load the trainable and what
    ``RDBStorage`` would import as the first trial opens the storage (alembic, Optuna's models: 0.3 s), and leave
    what they made frozen, out of the garbage collector's walks."""
    from tuner.backends.ray._preload import STORAGE_MODULES

    wanted = ["tuner.backends.ray._trainable", "torch", *STORAGE_MODULES]
    code = (f"import gc, importlib, sys; [importlib.import_module(m) for m in {WORKER_MODULES!r}]; "
            f"print([m for m in {wanted!r} if m not in sys.modules], gc.get_freeze_count() > 100_000)")
    seen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[3]).stdout.strip()
    assert seen == "[] True"
