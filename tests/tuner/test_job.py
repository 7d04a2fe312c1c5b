"""Whole jobs against a real database: stages, warm starts, the test split, resuming.

What every backend must do (budgets, resume, cancel, NaN trials) is ``backends/test_conformance.py``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tuner import Cancelled, RegtuneError, SpecError, parse_spec, run_job
from tuner.backends._threads import run_threads
from tuner.report import RunSummary, diagnose
from tuner.search import StageRun

Tiny = Callable[..., dict[str, Any]]


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _count(trials: list[optuna.trial.FrozenTrial], state: TrialState) -> int:
    return sum(t.state == state for t in trials)


def test_end_to_end_on_sqlite_and_postgresql(tiny: Tiny, storage_url: str, tmp_path: Path) -> None:
    report = run_job(parse_spec(tiny()), storage=storage_url, out_dir=tmp_path / "out")
    assert sorted(optuna.get_all_study_names(storage_url)) == ["tiny/baseline", "tiny/dropout", "tiny/l2"]
    for stage, n in (("baseline", 1), ("l2", 3), ("dropout", 3)):
        trials = _trials(storage_url, f"tiny/{stage}")
        assert _count(trials, TrialState.COMPLETE) == n
        for t in trials:
            assert t.user_attrs["stage"] == stage
            for key in ("train_loss", "val_loss", "gap", "train_acc", "val_acc", "sparsity", "features_kept",
                        "epochs", "seconds"):
                assert key in t.user_attrs, key
            assert t.user_attrs["gap"] == pytest.approx(t.user_attrs["val_loss"] - t.user_attrs["train_loss"])
            assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs"] + 1))
            assert len(t.user_attrs["val_curve"]) == t.user_attrs["epochs"]
            assert "train_curve" not in t.user_attrs  # search.train_curve is off by default
    assert [s.study_name for s in report.stages] == ["tiny/baseline", "tiny/l2", "tiny/dropout"]
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    for key in ("diagnosis", "baseline", "chosen", "candidates", "pareto", "importances"):
        assert key in written
    assert {"test_loss", "test_acc"} <= set(written["chosen"]) and {"test_loss", "test_acc"} <= set(written["baseline"])
    assert report.chosen.seeds.n == 2
    assert (tmp_path / "out" / "report.json").exists() and (tmp_path / "out" / "report.md").exists()


def test_later_stages_fix_earlier_best_values_and_start_warm(tiny: Tiny, sqlite_url: str) -> None:
    report = run_job(parse_spec(tiny()), storage=sqlite_url)
    fixed_l2 = report.stages[1].fixes["l2"]
    l2_trials = _trials(sqlite_url, "tiny/l2")
    candidates = [0.0] + [t.user_attrs["config"]["l2"] for t in l2_trials]
    assert fixed_l2 in candidates  # the best of the baseline (l2 off) and the l2 stage
    dropout_study = optuna.load_study(study_name="tiny/dropout", storage=sqlite_url)
    assert dropout_study.user_attrs["fixed"] == {"l2": fixed_l2}
    assert dropout_study.user_attrs["fixed_by"] == {"l2": "l2"}
    assert dropout_study.user_attrs["warm_start_trials"] == 4  # the baseline and the three l2 trials
    for t in dropout_study.get_trials():
        assert t.user_attrs["config"]["l2"] == fixed_l2
        assert list(t.params) == ["dropout"]
    for t in _trials(sqlite_url, "tiny/baseline"):
        assert set(t.user_attrs["config"].values()) == {0.0}  # the baseline trains with every regularizer off


def _csv(path: Path, test_scale: float) -> None:
    rng = np.random.default_rng(0)
    lines = ["a,b,c,label,fold"]
    for i in range(120):
        fold = "train" if i < 80 else ("val" if i < 100 else "test")
        x = rng.normal(size=3) * (test_scale if fold == "test" else 1.0)
        label = int(x[0] + 0.5 * x[1] > 0) if fold != "test" else int(rng.integers(2))
        lines.append(f"{x[0]},{x[1]},{x[2]},{label},{fold}")
    path.write_text("\n".join(lines) + "\n")


def test_the_search_never_reads_the_test_split(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    reports, losses = [], []
    for i, scale in enumerate((1.0, 1000.0)):  # the second test split is garbage: huge features, random labels
        _csv(tmp_path / f"d{i}.csv", scale)
        spec = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": f"d{i}.csv", "target": "label",
                                        "split": {"column": "fold", "val": None, "test": None}}))
        storage = f"sqlite:///{tmp_path}/s{i}.db"
        reports.append(run_job(spec, storage=storage))
        losses.append([t.user_attrs["val_loss"] for s in ("baseline", "l2", "dropout")
                       for t in _trials(storage, f"tiny/{s}")])
    assert losses[0] == losses[1]  # every trial saw the same data
    assert reports[0].chosen.params == reports[1].chosen.params
    assert reports[0].chosen.test_loss != reports[1].chosen.test_loss  # only the test metrics differ


def test_a_task_only_the_data_tells_is_checked_once_the_data_is_read(tiny: Tiny, sqlite_url: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV's task comes from its target column: the spec's task rules run again once it is read."""
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    rows = [f"{a},{b},{a + 0.5 * b + 0.01 * rng.normal()}" for a, b in rng.normal(size=(60, 2))]
    (tmp_path / "r.csv").write_text("\n".join(["a,b,y", *rows]) + "\n")
    spec = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "r.csv", "target": "y"},
                           search={"objective": "val_error", "space": {"label_smoothing": {"low": 0.0, "high": 0.2}}}))
    with pytest.raises(SpecError) as info:
        run_job(spec, storage=sqlite_url)
    why = "the dataset's target is continuous (a regression)"
    assert {i.field: i.message for i in info.value.issues} == {
        "search.space.label_smoothing": f"label smoothing needs a classification task, but {why}",
        "search.objective": f"val_error needs a classification task, but {why}; use val_loss"}
    assert optuna.get_all_study_names(sqlite_url) == []  # refused before any stage started


def test_a_backend_gets_each_stage_once_the_one_before_is_closed_and_must_run_them_all(
        tiny: Tiny, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stages reach the backend one by one: the next is opened (its study made, warm-started from the
    last one's best) only when the backend asks for it. A backend that returns early fails the job."""
    seen: list[tuple[str, list[str]]] = []

    def first_only(stages: Iterator[StageRun], data: Any, storage: str) -> None:
        run = next(stages)
        seen.append((run.stage.name, optuna.get_all_study_names(sqlite_url)))
        run_threads(run, data, storage)

    monkeypatch.setattr("tuner.job.executor_for", lambda name: first_only)
    spec = parse_spec(tiny())
    with pytest.raises(RegtuneError, match="ended before stage 'l2' ran"):
        run_job(spec, storage=sqlite_url)
    assert seen == [("baseline", ["tiny/baseline"])]
    assert [t.state for t in _trials(sqlite_url, "tiny/baseline")] == [TrialState.COMPLETE]
    assert optuna.get_all_study_names(sqlite_url) == ["tiny/baseline", "tiny/l2"]  # opened only to say so


def test_a_cancelled_job_keeps_its_trials_and_resumes_to_the_exact_budget(tiny: Tiny, sqlite_url: str) -> None:
    spec = parse_spec(tiny())
    calls = {"n": 0}

    def stop_soon() -> bool:  # polled before each trial and after each epoch
        calls["n"] += 1
        return calls["n"] > 14

    with pytest.raises(Cancelled):
        run_job(spec, storage=sqlite_url, should_stop=stop_soon)
    l2 = _trials(sqlite_url, "tiny/l2")
    interrupted = [t for t in l2 if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    kept = _count(l2, TrialState.COMPLETE)
    assert 1 <= kept < 3
    run_job(spec, storage=sqlite_url)
    for stage, n in (("baseline", 1), ("l2", 3), ("dropout", 3)):
        trials = _trials(sqlite_url, f"tiny/{stage}")
        assert _count(trials, TrialState.COMPLETE) == n
        assert _count(trials, TrialState.RUNNING) == 0


def test_one_trial_count_everywhere_judged_of_budget_with_pruned_beside(
        tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from api.progress_bars import BarProgress

    spec = parse_spec(tiny(training={"epochs": 6}, search={
        "sampler": "random", "pruner": "median",
        "space": {"l2": {"low": 1e-5, "high": 3.0, "log": True}},
        "stages": [{"name": "l2", "params": ["l2"], "trials": 8}]}, report={"seeds": 0, "top_k": 1}))
    report = run_job(spec, storage=f"sqlite:///{tmp_path}/runs.db", out_dir=tmp_path / "out")
    stage = report.stages[1]
    assert (stage.trials, stage.budget, stage.failed) == (8, 8, 0)
    assert stage.pruned > 0 and stage.completed == 8 - stage.pruned
    shown = f"8/8 trials ({stage.pruned} pruned)"
    assert f"| l2 | `tiny/l2` | {shown} |" in (tmp_path / "out" / "report.md").read_text()
    assert shown in (tmp_path / "out" / "report.html").read_text()
    BarProgress(quiet=True).summary(report, tmp_path / "out")
    assert f"baseline 1/1 trials  l2 {shown}" in capsys.readouterr().out


def test_diagnosis_says_below_when_the_validation_loss_is_under_the_training_loss() -> None:
    row = RunSummary.model_validate({"params": {}, "train_loss": 0.30, "val_loss": 0.25, "gap": -0.05, "epochs": 5,
                                     "sparsity": 0.0, "features_kept": 4, "test_loss": 0.26, "test_rmse": 0.5,
                                     "seeds": {"n": 1, "val_loss_mean": 0.25, "val_loss_std": 0.0}})
    text = diagnose(row, constant_loss=1.0)
    assert text.startswith("no_overfitting: without regularization the validation loss (0.25) is below the "
                           "training loss (0.3);")
    assert "within" not in text
