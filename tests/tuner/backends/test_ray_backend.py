"""The Ray Tune backend on a real local Ray cluster: the same trials, attributes and report as the Optuna backend."""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import ray
from optuna.trial import TrialState

from tuner import Cancelled, JobSpec, RegtuneError, open_storage, parse_spec, run_job
from tuner.backends.ray import ensure_ray, worker_storage_url

Tiny = Callable[..., dict[str, Any]]

RECORDED = ("stage", "config", "train_loss", "val_loss", "gap", "train_acc", "val_acc", "sparsity",
            "features_kept", "epochs", "seconds", "train_curve", "val_curve")
BASELINE_L2 = [{"name": "baseline", "params": [], "trials": 1}, {"name": "l2", "params": ["l2"], "trials": 3}]


def ray_spec(tiny: Tiny, *, epochs: int, parallelism: int, stages: list[dict[str, Any]]) -> JobSpec:
    return parse_spec(tiny(training={"epochs": epochs},
                           search={"backend": "ray", "pruner": "median", "parallelism": parallelism,
                                   "stages": stages},
                           report={"top_k": 1, "seeds": 1}))


def trials_of(url: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage=open_storage(url)).get_trials(deepcopy=False)


def most_at_once(trials: list[optuna.trial.FrozenTrial]) -> int:
    """The most trials that were running at the same moment (from their start and end times)."""
    events = sorted([(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def descendants() -> list[tuple[int, str]]:
    """(pid, process title) of every process below this one, as a local Ray cluster's processes are."""
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(entry.name)
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            titles[pid] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    found: list[int] = []
    frontier = [os.getpid()]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return [(pid, titles.get(pid, "")) for pid in found]


def epochs_lasting(tiny: Tiny, seconds: float, tmp_path: Path) -> int:
    """Epochs of the tiny spec that train for about ``seconds`` here (measured): long on any machine."""
    url = f"sqlite:///{tmp_path}/timing.db"
    run_job(parse_spec(tiny(training={"epochs": 30}, search={"stages": [{"name": "baseline", "params": [],
                                                                          "trials": 1}]},
                            report={"top_k": 1, "seeds": 0})), storage=url, prefix="timing")
    [trial] = trials_of(url, "timing/baseline")
    per_epoch = trial.user_attrs["seconds"] / trial.user_attrs["epochs"]
    return max(150, math.ceil(seconds / per_epoch))


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster for the module, whatever RAY_ADDRESS says: the tests' SQLite files are local."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        started = not ray.is_initialized()
        ensure_ray()
        yield
        if started:
            ray.shutdown()


@pytest.mark.ray
def test_stages_run_on_ray_and_record_what_the_optuna_backend_records(ray_cluster: None, tiny: Tiny,
                                                                     tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    spec = ray_spec(tiny, epochs=3, parallelism=2, stages=BASELINE_L2)

    report = run_job(spec, storage=url)

    for stage in spec.stages:
        trials = trials_of(url, f"tiny/{stage.name}")
        assert [t.state for t in trials] == [TrialState.COMPLETE] * stage.trials, \
            [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
        for t in trials:
            assert set(RECORDED) <= set(t.user_attrs), sorted(t.user_attrs)
            assert t.user_attrs["stage"] == stage.name
            assert sorted(t.intermediate_values) == [1, 2, 3]
            assert t.values == [pytest.approx(t.user_attrs["val_loss"])]
    assert most_at_once(trials_of(url, "tiny/l2")) == spec.search.parallelism
    assert [s.study_name for s in report.stages] == ["tiny/baseline", "tiny/l2"]
    written = report.model_dump(mode="json")
    assert {"val_loss", "test_loss", "test_acc"} <= set(written["baseline"])
    assert report.chosen.stage in ("baseline", "l2") and "test_loss" in written["chosen"]

    # The same job on the Optuna backend records the same facts, trial for trial.
    on_threads = spec.model_copy(update={"search": spec.search.model_copy(update={"backend": "optuna"})})
    run_job(on_threads, storage=url, prefix="threads")
    for stage in spec.stages:
        on_ray, on_optuna = trials_of(url, f"tiny/{stage.name}"), trials_of(url, f"threads/{stage.name}")
        assert [sorted(t.user_attrs) for t in on_ray] == [sorted(t.user_attrs) for t in on_optuna]
        assert [sorted(t.intermediate_values) for t in on_ray] == [sorted(t.intermediate_values) for t in on_optuna]


@pytest.mark.ray
def test_cancel_fails_the_running_trial_as_interrupted(ray_cluster: None, tiny: Tiny, storage_url: str,
                                                      tmp_path: Path) -> None:
    """Over SQLite and PostgreSQL: a worker writes the trial, the driver stops it."""
    epochs = epochs_lasting(tiny, 120, tmp_path)  # the driver stops it after an epoch or two: it never runs long
    spec = ray_spec(tiny, epochs=epochs, parallelism=1, stages=[{"name": "baseline", "params": [], "trials": 2}])

    def training_started() -> bool:  # polled by the driver: stop once a trial has reported an epoch
        return any(t.intermediate_values for t in trials_of(storage_url, "tiny/baseline"))

    with pytest.raises(Cancelled):
        run_job(spec, storage=storage_url, should_stop=training_started)

    trials = trials_of(storage_url, "tiny/baseline")
    assert [t.state for t in trials] == [TrialState.FAIL]
    assert trials[0].user_attrs["interrupted"] is True
    assert "cancelled" in trials[0].user_attrs["fail_reason"]
    assert 0 < len(trials[0].intermediate_values) < epochs  # stopped early; what it measured stays


@pytest.mark.ray
def test_a_crashed_worker_fails_its_trial_and_the_stage_goes_on(ray_cluster: None, tiny: Tiny,
                                                                 tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    epochs = epochs_lasting(tiny, 5, tmp_path)  # ten of the driver's polls: time to find the worker and kill it
    spec = ray_spec(tiny, epochs=epochs, parallelism=1, stages=[{"name": "baseline", "params": [], "trials": 1}])
    killed: list[int] = []

    def kill_one_trial_worker() -> bool:  # polled by the driver: SIGKILL the first trial's worker
        if not killed and any(t.intermediate_values for t in trials_of(url, "tiny/baseline")):
            actors = [pid for pid, title in descendants() if title.startswith("ray::ImplicitFunc")]
            for pid in actors[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return False

    run_job(spec, storage=url, should_stop=kill_one_trial_worker)

    failed, retried = trials_of(url, "tiny/baseline")
    assert killed
    assert (failed.state, retried.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert failed.user_attrs["fail_reason"].startswith("the Ray worker running it failed: ")
    assert "interrupted" not in failed.user_attrs
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
