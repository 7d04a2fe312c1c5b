"""The report's honest answers: candidates from every stage, the baseline's whole gap, what the search cost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from tuner import parse_spec, run_job
from tuner.report import bound_hits, stable_features

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
    report = run_job(parse_spec(SPARSE), storage=sqlite_url).model_dump(mode="json")
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
    report = run_job(parse_spec(SPARSE), storage=sqlite_url, out_dir=tmp_path / "out").model_dump(mode="json")
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
    report = run_job(spec, storage=sqlite_url).model_dump(mode="json")
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


def test_a_pareto_search_explains_the_choice_from_the_front(tiny: Callable[..., dict[str, Any]],
                                                             sqlite_url: str, tmp_path: Path) -> None:
    spec = parse_spec(tiny(search={"objective": ["val_loss", "gap"], "sampler": "random", "pruner": "none"}))
    report = run_job(spec, storage=sqlite_url, out_dir=tmp_path / "out").model_dump(mode="json")
    pc, front, chosen = report["pareto_choice"], report["pareto"], report["chosen"]
    assert pc["front_size"] == len(front) >= 1
    # the search trained the trial batched (a batch of one), the report re-trained it alone: equal to float tolerance
    assert (pc["val_loss"], pc["gap"]) == pytest.approx((chosen["val_loss"], chosen["gap"]), abs=1e-5)
    on = any((p["stage"], p["trial"]) == (chosen["stage"], chosen["trial"]) for p in front)
    assert pc["on_front"] == on
    if on:
        assert front[pc["rank"] - 1]["val_loss"] == pytest.approx(chosen["val_loss"], abs=1e-5)
        assert f"point {pc['rank']} of the {len(front)} on the front" in pc["why"]
    else:
        assert "behind the front" in pc["why"]
    assert 'id="pareto-choice"' in (tmp_path / "out" / "report.html").read_text()


def test_one_objective_needs_no_front_explained(tiny: Callable[..., dict[str, Any]], sqlite_url: str) -> None:
    assert "pareto_choice" not in run_job(parse_spec(tiny()), storage=sqlite_url)


@pytest.mark.parametrize(("params", "edge", "suggestion"), [
    ({"l2": 0.09}, "high", "try high: 1"),
    ({"l2": 1.2e-5}, "low", "try low: 1e-06"),
    ({"dropout": 0.58}, "high", "try high: 0.9"),
    ({"l2": 1e-3, "dropout": 0.3}, None, None),
    ({"l2": 0.0}, None, None),  # off is no edge
])
def test_a_choice_at_the_edge_of_its_prior_says_so(tiny: Callable[..., dict[str, Any]], params: dict[str, float],
                                                    edge: str | None, suggestion: str | None) -> None:
    spec = parse_spec(tiny(search={"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True},
                                             "dropout": {"low": 0.0, "high": 0.6}}}))
    hits = bound_hits(spec, params)
    if edge is None:
        assert hits == []
    else:
        assert [h["edge"] for h in hits] == [edge]
        assert suggestion is not None and hits[0]["message"].endswith(suggestion)


def test_a_choice_at_the_end_of_the_l1_path_asks_for_a_longer_path(tiny: Callable[..., dict[str, Any]]) -> None:
    spec = parse_spec(tiny(search={"space": {"l1": {"low": 1e-5, "high": 1e-1, "log": True}},
                                   "stages": [{"name": "l1", "params": ["l1"]}]}))
    path = [{"l1": 0.5 * 0.1**i} for i in range(4)]
    assert bound_hits(spec, {"l1": 0.5}, path, path_stage=True) == []  # λ_max: nothing beyond it
    hit, = bound_hits(spec, {"l1": 0.0005}, path, path_stage=True)
    assert hit["range"] == "the L1 path" and "a smaller path_eps" in hit["message"]


def test_stable_features_count_the_seeds_that_kept_each_column() -> None:
    got = stable_features(["a", "b", "c"], [[True, False, True], [True, False, False], [True, True, False]])
    assert got == [{"name": "a", "seeds": 3, "share": 1.0}, {"name": "b", "seeds": 1, "share": pytest.approx(1 / 3)},
                   {"name": "c", "seeds": 1, "share": pytest.approx(1 / 3)}]
