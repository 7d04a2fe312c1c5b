"""The report's honest answers: candidates from every stage, the baseline's whole gap, what the search cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from tuner import parse_spec, run_job

SPARSE: dict[str, Any] = {
    "name": "late-stage", "seed": 0,
    "dataset": {"source": "synthetic", "task": "classification", "n_samples": 400, "n_features": 40,
                "n_informative": 4, "noise": 0.02, "split": {"val": 0.25, "test": 0.2}},
    "model": {"kind": "linear"},
    "training": {"epochs": 60, "batch_size": 512, "lr": 0.05, "early_stopping": {"patience": 5}},
    "search": {
        "sampler": "random", "pruner": "none",
        "space": {"l1": {"low": 1e-2, "high": 1e-1, "log": True},
                  "l2": {"low": 10.0, "high": 100.0, "log": True}},  # absurd: every l2 trial underfits
        "stages": [{"name": "l1", "params": ["l1"], "trials": 3, "path": False},
                   {"name": "l2", "params": ["l2"], "trials": 3}],
    },
    "report": {"top_k": 2, "seeds": 1, "choose": "best"},
}


def test_a_last_stage_that_does_not_help_leaves_the_earlier_best_chosen(sqlite_url: str) -> None:
    report = run_job(parse_spec(SPARSE), storage=sqlite_url)
    late = optuna.load_study(study_name="late-stage/l2", storage=sqlite_url).get_trials()
    early = optuna.load_study(study_name="late-stage/l1", storage=sqlite_url).get_trials()
    assert min(t.user_attrs["val_loss"] for t in late) > max(t.user_attrs["val_loss"] for t in early)
    cands = report["candidates"]
    assert [c["stage"] for c in cands] == ["baseline", "l1", "l1"]  # top 2 over every stage, plus the baseline
    assert len({tuple(sorted(c["params"].items())) for c in cands}) == 3, "distinct configurations"
    chosen, l1_stage = report["chosen"], report["stages"][1]
    assert chosen["stage"] == "l1" and chosen["trial"] == l1_stage["best_trial"]
    assert chosen["params"] == l1_stage["best_params"] and chosen["params"]["l2"] == 0.0
    assert chosen["seeds"]["val_loss_mean"] < cands[0]["val_loss_mean"]  # and it beats the baseline


def test_the_baseline_reports_its_gap_at_its_best_and_at_its_last_epoch(sqlite_url: str, tmp_path: Path) -> None:
    report = run_job(parse_spec(SPARSE), storage=sqlite_url, out_dir=tmp_path / "out")
    base = report["baseline"]
    train, val = report["curves"]["baseline"]["train"], report["curves"]["baseline"]["val"]
    best, last = base["best_epoch"], base["last_epoch"]
    assert last["epoch"] == len(val) and best["epoch"] == 1 + val.index(min(val))
    assert best["gap"] == pytest.approx(val[best["epoch"] - 1] - train[best["epoch"] - 1])
    assert last["gap"] == pytest.approx(val[-1] - train[-1])
    assert last["gap"] > best["gap"]  # early stopping ran on past the best epoch while the gap grew
    said = f"at its last epoch ({last['epoch']}) it is {last['gap']:.4g}"
    assert said in (tmp_path / "out" / "report.html").read_text()
    assert said in (tmp_path / "out" / "report.md").read_text()


def test_the_report_says_what_each_stage_cost(sqlite_url: str) -> None:
    spec = parse_spec({**SPARSE, "search": {**SPARSE["search"], "pruner": "median"}})
    report = run_job(spec, storage=sqlite_url)
    rows = {r["stage"]: r for r in report["cost"]}
    assert list(rows) == ["baseline", "l1", "l2", "re-training over seeds", "total"]
    for stage in ("baseline", "l1", "l2"):
        trials = optuna.load_study(study_name=f"late-stage/{stage}", storage=sqlite_url).get_trials()
        row = rows[stage]
        assert row["trials"] == len(trials) and row["epochs_budgeted"] == 60 * len(trials)
        assert row["epochs_run"] == sum(len(t.intermediate_values) for t in trials)
        assert row["epochs_run"] + row["epochs_saved_by_pruning"] + row["epochs_saved_by_early_stopping"] \
            == row["epochs_budgeted"]
        assert row["seconds"] > 0
    assert rows["re-training over seeds"]["trials"] == 2 * len(report["candidates"])
    assert rows["total"]["epochs_run"] == sum(rows[s]["epochs_run"] for s in list(rows)[:-1])
