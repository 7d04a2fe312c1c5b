"""The Ray Tune backend on a real local Ray cluster: what only Ray does (trials side by side on its actors,
a worker that dies, the storage URL its workers open).

What every backend must do (budgets, resume, cancel, failed trials, the attributes) is the shared suite's,
``test_conformance.py``, which runs it on Ray too.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest
from _backends import RECORDED, Tiny, descendants, epochs_lasting, most_at_once, ray_spec, trials_of, tune_results
from optuna.trial import TrialState

from tuner import RegtuneError, parse_spec, run_job
from tuner.backends.ray import worker_storage_url
from tuner.backends.ray._searcher import StageSearcher


@pytest.mark.ray
def test_ray_runs_parallelism_trials_side_by_side(ray_cluster: None, tiny: Tiny, tmp_path: Path) -> None:
    """Its actors get the cores: ``parallelism`` trials run at once, never more (the shared suite checks 'never
    more' on every backend)."""
    url = f"sqlite:///{tmp_path}/x.db"
    spec = ray_spec(tiny, epochs=3, parallelism=2, stages=[{"name": "l2", "params": ["l2"], "trials": 3}])
    run_job(spec, storage=url)
    trials = trials_of(url, "tiny/l2")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert most_at_once(trials) == spec.search.parallelism


@pytest.mark.ray
@pytest.mark.parametrize("batch", [1, 2], ids=["one", "batched"])
def test_a_crashed_worker_fails_its_trials_and_the_stage_goes_on(ray_cluster: None, tiny: Tiny, tmp_path: Path,
                                                                  batch: int) -> None:
    """Batched, every member of the Tune trial whose worker died fails with the reason; none stays RUNNING."""
    url = f"sqlite:///{tmp_path}/x.db"
    epochs = epochs_lasting(tiny, 5, tmp_path)  # ten of the driver's polls: time to find the worker and kill it
    spec = ray_spec(tiny, epochs=epochs, parallelism=1, batch=batch,
                    stages=[{"name": "baseline", "params": [], "trials": batch}])
    killed: list[int] = []

    def kill_one_trial_worker() -> bool:  # polled by the driver: SIGKILL the first trial's worker
        if not killed and any(t.intermediate_values for t in trials_of(url, "tiny/baseline")):
            actors = [pid for pid, title in descendants() if title.startswith("ray::ImplicitFunc")]
            for pid in actors[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return False

    run_job(spec, storage=url, should_stop=kill_one_trial_worker)

    trials = trials_of(url, "tiny/baseline")
    assert killed
    assert [t.state for t in trials] == [TrialState.FAIL] * batch + [TrialState.COMPLETE] * batch
    for failed in trials[:batch]:
        assert failed.user_attrs["fail_reason"].startswith("the Ray worker running it failed: ")
        assert "interrupted" not in failed.user_attrs
    for retried in trials[batch:]:
        assert set(RECORDED) <= set(retried.user_attrs)


def test_worker_storage_url_makes_sqlite_paths_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert worker_storage_url("sqlite:///runs.db") == f"sqlite:///{tmp_path}/runs.db"
    assert worker_storage_url("sqlite:////abs/runs.db") == "sqlite:////abs/runs.db"
    pg = "postgresql+psycopg://u:secret@db:5432/regtune"
    assert worker_storage_url(pg) == pg


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_worker_storage_url_rejects_in_memory_sqlite(url: str) -> None:
    with pytest.raises(RegtuneError, match="in-memory SQLite"):
        worker_storage_url(url)


@pytest.mark.ray
def test_a_batch_is_refilled_from_the_driver_and_records_what_the_thread_backend_records(
        ray_cluster: None, tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Members that end are replaced by trials the driver asks for, at the same epoch boundaries as the thread
    backend's batch asks: the same trials, states, reports and attributes, pruning included. The members that
    end at a boundary travel with the request for their replacements, each member told once."""
    refills: list[int] = []
    results: list[tuple[int, bool]] = []  # per result with members or a request: (members told, a request)
    answer, seen = StageSearcher._refill, StageSearcher.on_trial_result

    def counted(self: StageSearcher, trial_id: str, result: dict[str, Any]) -> None:
        before = self.handed[trial_id].given if trial_id in self.handed else 0
        answer(self, trial_id, result)
        refills.append(self.handed[trial_id].given - before if trial_id in self.handed else 0)

    def noted(self: StageSearcher, trial_id: str, result: dict[str, Any]) -> None:
        if result.get("outcomes") or "want" in result:
            results.append((len(result.get("outcomes") or []), "want" in result))
        seen(self, trial_id, result)

    monkeypatch.setattr(StageSearcher, "_refill", counted)
    monkeypatch.setattr(StageSearcher, "on_trial_result", noted)
    stages = [{"name": "baseline", "params": [], "trials": 1}, {"name": "l2", "params": ["l2"], "trials": 7}]
    urls = {b: f"sqlite:///{tmp_path}/{b}.db" for b in ("ray", "optuna")}
    for backend, url in urls.items():
        run_job(parse_spec(tiny(training={"epochs": 6}, report={"top_k": 1, "seeds": 1}, search={
            "backend": backend, "pruner": "median", "parallelism": 1, "stages": stages, "batch": 3})), storage=url)
    ray_trials, thread_trials = (trials_of(urls[b], "tiny/l2") for b in ("ray", "optuna"))
    assert sum(refills) > 0  # places were refilled within a Tune trial
    # every member (the baseline's and the l2 stage's 7) told once, the most with the request for their places
    # (alone only where the driver had refused as many places before: the batch does not ask again)
    assert sum(n for n, _ in results) == 1 + 7 and sum(n for n, want in results if want) >= 6
    assert [(t.number, t.state, t.params, t.intermediate_values) for t in ray_trials] == [
        (t.number, t.state, t.params, t.intermediate_values) for t in thread_trials]
    assert [t.user_attrs["epochs"] for t in ray_trials] == [t.user_attrs["epochs"] for t in thread_trials]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ray_trials) == 7
    ray_study, thread_study = (optuna.load_study(study_name="tiny/l2", storage=urls[b]) for b in ("ray", "optuna"))
    assert {k: ray_study.user_attrs[k] for k in ("batched", "batch_size")} == {"batched": True, "batch_size": 3}
    assert {k: thread_study.user_attrs[k] for k in ("batched", "batch_size")} == {"batched": True, "batch_size": 3}


@pytest.mark.ray
def test_a_job_runs_its_stages_in_one_tune_run_on_the_same_worker(ray_cluster: None, tiny: Tiny, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One Tune run for the job, not one per stage: with parallelism 1, every trial of every stage, one at a
    time or batched, runs in the one worker process Tune started first (a stage pays no start-up of its own)."""
    grids = tune_results(monkeypatch)
    stages = [{"name": "baseline", "params": [], "trials": 1}, {"name": "l2", "params": ["l2"], "trials": 2},
              {"name": "dropout", "params": ["dropout"], "trials": 3}]
    url = f"sqlite:///{tmp_path}/x.db"
    run_job(ray_spec(tiny, epochs=2, parallelism=1, stages=stages, batch=2), storage=url)

    [grid] = grids
    assert [(r.metrics or {}).get("pid") for r in grid] == [grid[0].metrics["pid"]] * len(grid)
    assert sorted((r.config["stage"], len(r.config["members"])) for r in grid) == [
        ("baseline", 1), ("dropout", 2), ("l2", 2)]
    for stage in stages:
        assert [t.state for t in trials_of(url, f"tiny/{stage['name']}")] == [TrialState.COMPLETE] * stage["trials"]


def test_the_mailbox_actor_class_unpickles_without_importing_regtune(tmp_path: Path) -> None:
    """The ``Mailbox`` actor's worker process unpickles its class with what a Ray worker has: pickled by
    reference, it imported the ``tuner`` package (torch with it) beside the training batches."""
    import subprocess
    import sys

    import ray.cloudpickle

    from tuner.backends.ray._mailbox import pickled_by_value

    (tmp_path / "mailbox.pkl").write_bytes(ray.cloudpickle.dumps(pickled_by_value()))  # as ``start_mailbox``'s
    script = ("import sys, pickle\n"
              "sys.modules['tuner'] = None  # importing regtune fails from here on\n"
              f"cls = pickle.loads(open({str(tmp_path / 'mailbox.pkl')!r}, 'rb').read())\n"
              "box = cls()\n"
              "assert 'torch' not in sys.modules and 'optuna' not in sys.modules, sorted(sys.modules)\n"
              "print(type(box).__name__, box.answers, callable(box.put), callable(box.take))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Mailbox", "{}", "True", "True"]
