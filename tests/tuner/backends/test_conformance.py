"""One suite that every backend passes, as Optuna runs one storage suite over every storage.

Parametrized over the backend registry (``tuner.registry.BACKENDS``): a new backend is tested here
for free, and is not done until it passes. Budgets are exact, a finished job run again adds no trial,
a cancel fails the running trial as interrupted and the job resumes to the exact budget, a trial whose
loss turns NaN fails with its reason while the stage still meets its budget, a stage that cannot meet it
fails the job and opens no later stage, and every trial records
what DESIGN.md lists. The budget, NaN and cancel checks run again with ``search.batch: 2``: a batch's
members are each told to the study, and none is left RUNNING, on every backend. Checks that belong to one
backend (a Ray worker's crash) stay in its own file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from _backends import RECORDED, Tiny, epochs_lasting, most_at_once, trials_of
from optuna.trial import TrialState

from tuner import Cancelled, JobSpec, RegtuneError, parse_spec, run_job
from tuner.registry import BACKENDS

MARKS = {"ray": [pytest.mark.ray]}  # a backend that starts a cluster
FIXTURES = {"ray": "ray_cluster"}  # … and the fixture that starts it, once per module

BASELINE_L2 = [{"name": "baseline", "params": [], "trials": 1}, {"name": "l2", "params": ["l2"], "trials": 3}]


@pytest.fixture(params=[pytest.param(name, marks=MARKS.get(name, [])) for name in BACKENDS.names])
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend of the registry in turn."""
    name: str = request.param
    if name in FIXTURES:
        request.getfixturevalue(FIXTURES[name])
    return name


@pytest.fixture(params=[1, 2], ids=["one", "batched"])
def batch(request: pytest.FixtureRequest) -> int:
    """``search.batch``: one trial at a time, then two trained as one batched model."""
    k: int = request.param
    return k


def spec_on(tiny: Tiny, backend: str, *, epochs: int, stages: list[dict[str, Any]], parallelism: int = 1,
            **search: Any) -> JobSpec:
    """The tiny spec on ``backend``: few epochs, the given stages, one re-training seed."""
    return parse_spec(tiny(training={"epochs": epochs},
                           search={"backend": backend, "parallelism": parallelism, "stages": stages, **search},
                           report={"top_k": 1, "seeds": 1}))


def _states(trials: list[Any]) -> list[tuple[int, str, Any]]:
    """What a failed assertion shows: each trial's number, state and why it failed."""
    return [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]


@pytest.mark.parametrize("train_curve", [False, True], ids=["kept-epoch", "curves"])
def test_budgets_are_exact_and_every_trial_records_what_design_lists(backend: str, batch: int, train_curve: bool,
                                                                     tiny: Tiny, tmp_path: Path) -> None:
    """Batched, the l2 stage's three trials train as a batch of two beside one alone. With ``train_curve``
    each trial keeps every epoch's train loss too; without it (the default), the kept epoch's."""
    url = f"sqlite:///{tmp_path}/x.db"
    spec = spec_on(tiny, backend, epochs=3, parallelism=2, stages=BASELINE_L2, pruner="median", batch=batch,
                   train_curve=train_curve)

    report = run_job(spec, storage=url)

    curves = {"train_curve"} if train_curve else set()
    for stage in spec.stages:
        trials = trials_of(url, f"tiny/{stage.name}")
        assert [t.state for t in trials] == [TrialState.COMPLETE] * stage.trials, _states(trials)
        for t in trials:
            assert set(t.user_attrs) == {*RECORDED, *curves, "best_epoch", "val_loss_se"}, sorted(t.user_attrs)
            assert t.user_attrs["stage"] == stage.name
            assert t.user_attrs["gap"] == pytest.approx(t.user_attrs["val_loss"] - t.user_attrs["train_loss"])
            assert sorted(t.intermediate_values) == [1, 2, 3]
            assert len(t.user_attrs["val_curve"]) == t.user_attrs["epochs"]
            if train_curve:
                assert len(t.user_attrs["train_curve"]) == t.user_attrs["epochs"]
                assert t.user_attrs["train_curve"][t.user_attrs["best_epoch"] - 1] == pytest.approx(
                    t.user_attrs["train_loss"], abs=1e-6)
            assert t.values == [pytest.approx(t.user_attrs["val_loss"])]
    assert most_at_once(trials_of(url, "tiny/l2")) <= spec.search.parallelism * batch
    assert [s.study_name for s in report.stages] == ["tiny/baseline", "tiny/l2"]
    written = report.model_dump(mode="json")
    assert {"val_loss", "test_loss", "test_acc"} <= set(written["baseline"])
    assert report.chosen.stage in ("baseline", "l2") and "test_loss" in written["chosen"]


def test_a_finished_job_run_again_adds_no_trial(backend: str, tiny: Tiny, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    spec = spec_on(tiny, backend, epochs=2, stages=BASELINE_L2)
    run_job(spec, storage=url)
    before = {s.name: _states(trials_of(url, f"tiny/{s.name}")) for s in spec.stages}

    report = run_job(spec, storage=url)

    assert {s.name: _states(trials_of(url, f"tiny/{s.name}")) for s in spec.stages} == before
    assert [len(trials) for trials in before.values()] == [1, 3]
    assert [s.trials for s in report.stages] == [1, 3]


def test_a_cancel_fails_the_running_trial_as_interrupted_and_the_job_resumes_to_the_exact_budget(
        backend: str, tiny: Tiny, storage_url: str, tmp_path: Path) -> None:
    """Over SQLite and PostgreSQL. A trial lasts some ten seconds here, twenty of a Ray driver's polls of the
    stop (the thread backend asks at every epoch boundary); the cancel comes an epoch or two in."""
    _cancel_then_resume(tiny, backend, 1, storage_url, tmp_path)


def test_a_cancel_fails_a_running_batch_as_interrupted_and_the_job_resumes_to_the_exact_budget(
        backend: str, tiny: Tiny, sqlite_url: str, tmp_path: Path) -> None:
    """Both trials of the stage train as one batch: both stop, both are recorded interrupted."""
    _cancel_then_resume(tiny, backend, 2, sqlite_url, tmp_path)


def _cancel_then_resume(tiny: Tiny, backend: str, batch: int, url: str, tmp_path: Path) -> None:
    stages = [{"name": "baseline", "params": [], "trials": 2}]
    epochs = epochs_lasting(tiny, 10, tmp_path)
    spec = spec_on(tiny, backend, epochs=epochs, stages=stages, batch=batch)

    def training_started() -> bool:  # stop once a trial has reported an epoch
        return any(t.intermediate_values for t in trials_of(url, "tiny/baseline"))

    with pytest.raises(Cancelled):
        run_job(spec, storage=url, should_stop=training_started)

    stopped = trials_of(url, "tiny/baseline")
    assert len(stopped) == batch, _states(stopped)  # the running trial, or the running batch
    for t in stopped:
        assert t.state == TrialState.FAIL
        assert t.user_attrs["interrupted"] is True
        assert "cancelled" in t.user_attrs["fail_reason"]
        assert len(t.intermediate_values) < epochs  # stopped early
    # what it measured stays (a batch's later member may have seen the stop before reporting its first epoch)
    assert any(t.intermediate_values for t in stopped)

    # Resumed, the interrupted trials do not count toward the budget.
    run_job(spec, storage=url)
    trials = trials_of(url, "tiny/baseline")
    assert [t.state for t in trials] == [TrialState.FAIL] * batch + [TrialState.COMPLETE] * 2, _states(trials)


def test_nan_trials_fail_with_their_reason_and_the_stage_still_meets_its_budget(backend: str, batch: int,
                                                                               tiny: Tiny, tmp_path: Path) -> None:
    """Batched, a member whose loss turns NaN fails alone; the rest of its batch trains on."""
    url = f"sqlite:///{tmp_path}/x.db"
    spec = parse_spec(tiny(
        training={"optimizer": "sgd", "lr": 1.0},
        search={"backend": backend, "sampler": "random", "batch": batch,
                "space": {"l2": {"low": 1e-4, "high": 1e4, "log": True}, "dropout": None},
                "stages": [{"name": "l2", "params": ["l2"], "trials": 4}]},
        report={"top_k": 1, "seeds": 1},
    ))

    run_job(spec, storage=url)

    trials = trials_of(url, "tiny/l2")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4, _states(trials)
    assert failed, "a λ₂ of 10³ with SGD at lr 1 diverges: some trial must have failed"
    for t in failed:
        assert "loss" in t.user_attrs["fail_reason"] and "interrupted" not in t.user_attrs, _states(failed)
        assert t.user_attrs["stage"] == "l2" and "config" in t.user_attrs


def test_a_stage_short_of_its_budget_fails_the_job_with_its_reason_and_no_later_stage_opens(
        backend: str, tiny: Tiny, tmp_path: Path) -> None:
    """Every trial of the l2 stage diverges: the job fails naming the stage and why, its trials are recorded
    FAIL with their reason, and the dropout stage after it is never opened."""
    url = f"sqlite:///{tmp_path}/x.db"
    spec = parse_spec(tiny(
        training={"optimizer": "sgd", "lr": 1.0},
        search={"backend": backend, "sampler": "random",
                "space": {"l2": {"low": 1e3, "high": 1e4, "log": True}},
                "stages": [{"name": "l2", "params": ["l2"], "trials": 2},
                           {"name": "dropout", "params": ["dropout"], "trials": 1}]},
        report={"top_k": 1, "seeds": 1},
    ))

    with pytest.raises(RegtuneError, match=r"stage 'l2': only 0 of 2 trials finished .* last failure: .*loss"):
        run_job(spec, storage=url)

    trials = trials_of(url, "tiny/l2")
    assert trials and all(t.state == TrialState.FAIL and "loss" in t.user_attrs["fail_reason"] for t in trials), \
        _states(trials)
    assert optuna.get_all_study_names(url) == ["tiny/baseline", "tiny/l2"]  # (a baseline comes first)
