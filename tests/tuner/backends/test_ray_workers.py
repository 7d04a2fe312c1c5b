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


def started_idle_workers(timeout: float = 120.0) -> dict[int, bool]:
    """The cluster's idle workers once they have started and imported regtune: the same all-imported set twice in
    a row, a second apart."""
    deadline, last, idle = time.monotonic() + timeout, None, idle_workers()
    while time.monotonic() < deadline:
        idle = idle_workers()
        if idle and all(idle.values()) and idle == last:
            break
        last = idle
        time.sleep(1.0)
    return idle


@pytest.mark.ray
def test_a_jobs_first_trial_runs_on_a_worker_that_started_with_regtune_imported_on_a_fresh_cluster_and_after_a_job(
        tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fresh cluster's workers serve its first job; those ``restock`` starts once a job is done serve the next
    (an actor takes a worker nothing has used: the first job's are gone with its actors)."""
    import ray

    from tuner.backends.ray import ensure_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():  # another module's cluster, still up in this process
        ray.shutdown()
    ensure_ray()
    try:
        idle = started_idle_workers()
        assert idle and all(idle.values()), f"the fresh cluster's idle workers (pid: torch imported): {idle}"
        assert len(idle) <= WARM_WORKERS
        fresh = set(idle)
        grids = tune_results(monkeypatch)
        spec = ray_spec(tiny, epochs=2, parallelism=1, stages=[{"name": "baseline", "params": [], "trials": 1}])
        for job, url in enumerate([f"sqlite:///{tmp_path}/first.db", f"sqlite:///{tmp_path}/next.db"]):
            if job:  # the worker the first job's actor took is gone, and one started in its place
                idle = started_idle_workers()
                assert all(idle.values()), f"the idle workers after the first job (pid: torch imported): {idle}"
                assert len(idle) == len(fresh) and set(idle) - fresh, (fresh, idle)
                assert grids[0][0].metrics["pid"] not in idle
            warm = list(idle)
            run_job(spec, storage=url)

            assert [t.state for t in trials_of(url, "tiny/baseline")] == [TrialState.COMPLETE]
            assert grids[job][0].metrics["pid"] in warm  # Tune's actor took a started worker, not one started for it
    finally:
        ray.shutdown()


@pytest.mark.ray
def test_restock_starts_workers_for_this_process_on_the_cluster_and_tells_when_it_cannot(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import ray

    from tuner.backends.ray import ensure_ray
    from tuner.backends.ray._workers import restock

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        ray.shutdown()
    ensure_ray()
    try:
        before = set(started_idle_workers())
        assert restock(1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(set(started_idle_workers()) - before) < 1:
            time.sleep(0.5)
        assert len(set(idle_workers()) - before) == 1, "one worker more, started with regtune imported"

        import ray.core.generated

        # as without grpcio, which the generated gRPC module imports
        monkeypatch.delattr(ray.core.generated, "node_manager_pb2_grpc", raising=False)
        monkeypatch.setitem(sys.modules, "ray.core.generated.node_manager_pb2_grpc", None)
        with caplog.at_level("INFO", logger="tuner.backends.ray._workers"):
            assert not restock(1)
        assert "not restocked" in caplog.text
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
