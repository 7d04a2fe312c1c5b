"""The typed report: ``report.json`` of a real run has DESIGN.md's keys, the task's own, and reads back the same."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tuner import Report, parse_spec, run_job

Tiny = Callable[..., dict[str, Any]]

TOP = {"job", "task", "baseline", "chosen", "choose", "candidates", "stages", "pareto", "importances", "curves",
       "bound_hits", "cost", "diagnosis", "device"}
MEASURED = {"params", "train_loss", "val_loss", "gap", "epochs", "sparsity", "features_kept", "test_loss", "seeds"}
CANDIDATE = {"stage", "trial", "params", "val_loss_mean", "val_loss_std", "val_loss_se", "n", "val_losses"}
STAGE = {"name", "study_name", "trials", "budget", "completed", "pruned", "failed", "best_trial", "best_value",
         "best_params", "fixes"}
PARETO = {"stage", "trial", "params", "val_loss", "gap"}
SEEDS = {"n", "val_loss_mean", "val_loss_std"}
EPOCH_GAPS = {"best_epoch", "last_epoch"}  # the baseline's only
PATH_STAGE = STAGE | {"l1_max", "l1_max_found"}
PATH_POINT = {"l1", "val_loss", "val_loss_se", "features_kept", "kept", "stage", "trial"}
COST = {"stage", "trials", "complete", "pruned", "failed", "epochs_run", "epochs_budgeted", "epochs_saved_by_pruning",
        "epochs_saved_by_early_stopping", "seconds"}
SYNTHETIC_FEATURES = {"kept", "removed", "informative_kept", "informative_total", "noise_removed", "noise_total",
                      "stability", "seeds"}


def _run(spec: dict[str, Any], tmp_path: Path) -> tuple[Report, str]:
    report = run_job(parse_spec(spec), storage=f"sqlite:///{tmp_path}/runs.db", out_dir=tmp_path / "out")
    return report, (tmp_path / "out" / "report.json").read_text(encoding="utf-8")


def _assert_common(written: dict[str, Any], measured: set[str]) -> None:
    """The keys every report has; ``measured``: those of the baseline and chosen runs for this task."""
    assert set(written["baseline"]) == measured | EPOCH_GAPS
    assert set(written["chosen"]) == measured | {"stage", "trial"}
    assert set(written["baseline"]["seeds"]) == set(written["chosen"]["seeds"]) == SEEDS
    assert all(set(c) == CANDIDATE for c in written["candidates"])
    assert all(set(s) == (PATH_STAGE if s["name"] == "l1" else STAGE) for s in written["stages"])
    assert all(set(c) == COST for c in written["cost"]) and written["cost"][-1]["stage"] == "total"
    assert written["pareto"] and all(set(p) == PARETO for p in written["pareto"])
    assert set(written["curves"]) == {"baseline", "chosen"}
    assert all(set(c) == {"train", "val"} for c in written["curves"].values())


def test_a_classification_report_has_accuracies_and_no_rmse(tiny: Tiny, tmp_path: Path) -> None:
    spec = tiny(dataset={"source": "synthetic", "name": None, "split": None, "n_samples": 200, "n_features": 8,
                         "n_informative": 3},
                search={"space": {"l1": {"low": 1e-4, "high": 1e-1, "log": True, "allow_zero": True}},
                        "stages": [{"name": "baseline", "params": [], "trials": 1},
                                   {"name": "l1", "params": ["l1"], "trials": 2}]})
    report, text = _run(spec, tmp_path)
    written = json.loads(text)
    assert set(written) == TOP | {"features", "l1_path", "classes"}  # no loss_units: losses are cross-entropies
    assert written["l1_path"] and all(set(p) == PATH_POINT for p in written["l1_path"])  # l1 alone: a path
    _assert_common(written, MEASURED | {"train_acc", "val_acc", "test_acc"})  # and no test_rmse
    assert set(written["features"]) == SYNTHETIC_FEATURES  # synthetic data knows its informative features
    assert report.task == "classification" and report.chosen.test_metric == ("test_acc", report.chosen.test_acc)
    assert written["chosen"]["test_acc"] == report.chosen.test_acc


def test_a_regression_report_has_rmse_and_loss_units_and_no_accuracies(tmp_path: Path) -> None:
    spec = {"name": "reg", "dataset": {"source": "sklearn", "name": "diabetes"}, "model": {"kind": "linear"},
            "training": {"epochs": 3, "batch_size": 64, "lr": 0.05},
            "search": {"sampler": "random", "pruner": "none", "space": {"l2": {"low": 1e-5, "high": 1e-1,
                                                                                 "log": True}},
                       "stages": [{"name": "l2", "params": ["l2"], "trials": 2}]},
            "report": {"top_k": 1, "seeds": 1}}
    report, text = _run(spec, tmp_path)
    written = json.loads(text)
    assert set(written) == TOP | {"loss_units"}  # no L1 searched: no features
    _assert_common(written, MEASURED | {"test_rmse"})  # and no accuracies
    assert written["loss_units"] == "mean squared error of the standardized target"
    assert report.chosen.test_metric == ("test_rmse", written["chosen"]["test_rmse"])


def test_report_json_reads_back_to_the_same_report(tiny: Tiny, tmp_path: Path) -> None:
    report, text = _run(tiny(search={"stages": [{"name": "l2", "params": ["l2"], "trials": 2}]}), tmp_path)
    again = Report.model_validate_json(text)
    assert again == report
    assert Report.model_validate(json.loads(text)).model_dump_json(indent=2) == text
    assert again.stages[0].name == "baseline" and again.stages[1].study_name == "tiny/l2"


def test_an_unknown_or_missing_key_is_an_error_not_dropped(tiny: Tiny, tmp_path: Path) -> None:
    _, text = _run(tiny(search={"stages": [{"name": "l2", "params": ["l2"], "trials": 1}]}), tmp_path)
    written = json.loads(text)
    with pytest.raises(ValidationError, match=r"chosen\.gapp"):
        Report.model_validate(written | {"chosen": written["chosen"] | {"gapp": 0.1}})
    del written["diagnosis"]
    with pytest.raises(ValidationError, match="diagnosis"):
        Report.model_validate(written)


def _properties(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(model, field, property)`` of every model in a JSON schema and its ``$defs``."""
    models = {schema["title"]: schema, **schema.get("$defs", {})}
    return [(m, k, p) for m, s in models.items() for k, p in s.get("properties", {}).items()]


def test_every_field_of_the_report_has_a_description() -> None:
    props = _properties(Report.model_json_schema(mode="serialization"))
    assert {m for m, _, _ in props} >= {"Report", "RunSummary", "ChosenRun", "CandidateSummary", "StageSummary",
                                        "ParetoPoint", "Curves", "LearningCurve", "FeatureSummary", "SeedSummary"}
    missing = [f"{m}.{k}" for m, k, p in props if not p.get("description")]
    assert not missing, f"fields without a description: {missing}"
