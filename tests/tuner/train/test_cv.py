"""Cross-validation: a trial's val loss is the fold mean with the folds' standard error; the test is read once."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuner import parse_spec, run_job
from tuner.errors import SpecError
from tuner.report import _build
from tuner.train import Split, load_dataset

Tiny = Callable[..., dict[str, Any]]
FOLDS = {"split": {"val": None, "test": 0.2, "folds": 3}}


def test_folds_cover_the_non_test_rows_once_each_standardized_on_their_own_training_rows(tiny: Tiny) -> None:
    spec = parse_spec(tiny(dataset=FOLDS))
    data = load_dataset(spec.dataset, spec.seed)
    assert data.test is not None and len(data.val) == 0 and len(data.folds) == 3
    assert sum(len(f.val) for f in data.folds) == len(data.train)  # every non-test row validates once
    for fold in data.folds:
        assert len(fold.train) + len(fold.val) == len(data.train) and fold.test is None
        assert fold.train.X.mean(dim=0).abs().max() < 1e-4  # scaled on its own training rows
        assert fold.train.X.std(dim=0, unbiased=False).sub(1).abs().max() < 1e-3


def test_folds_and_a_val_fraction_exclude_each_other(tiny: Tiny) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(tiny(dataset={"split": {"val": 0.2, "test": 0.2, "folds": 3}}))
    assert [i.field for i in err.value.issues] == ["dataset.split.folds"]


def test_each_trial_reports_the_fold_mean_and_its_standard_error_and_the_test_split_is_read_once(
        tiny: Tiny, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec(tiny(dataset=FOLDS, report={"top_k": 2, "seeds": 1, "choose": "one_se"}))
    n_test = len(load_dataset(spec.dataset, spec.seed).test or Split.__new__(Split))
    reads: list[int] = []
    real = _build.evaluate

    def counting(model: Any, split: Split, task: str) -> tuple[float, float | None]:
        reads.append(len(split))
        return real(model, split, task)

    monkeypatch.setattr(_build, "evaluate", counting)
    report = run_job(spec, storage=sqlite_url, out_dir=tmp_path / "out").model_dump(mode="json")

    for stage in ("baseline", "l2", "dropout"):
        for t in optuna.load_study(study_name=f"tiny/{stage}", storage=sqlite_url).get_trials():
            assert t.state == TrialState.COMPLETE
            folds = t.user_attrs["fold_val_losses"]
            assert len(folds) == 3 and t.user_attrs["cv_folds"] == 3
            assert t.user_attrs["val_loss"] == pytest.approx(statistics.fmean(folds))
            assert t.user_attrs["val_loss_se"] == pytest.approx(statistics.stdev(folds) / math.sqrt(3))
            assert sorted(t.intermediate_values) == [1, 2, 3]  # a step is a fold
            assert t.intermediate_values[3] == pytest.approx(t.user_attrs["val_loss"])
    assert reads == [n_test, n_test]  # the baseline's and the chosen configuration's one test score each
    chosen = report["chosen"]
    assert chosen["refit"]["rows"] == report["validation"]["rows"] > 0
    assert chosen["val_loss"] == pytest.approx(statistics.fmean(chosen["fold_val_losses"]))
    assert "refit on all" in report["validation"]["note"]
    assert "Cross-validation: every val loss is the mean over 3 folds" in (tmp_path / "out" / "report.html").read_text()
    refit_row = next(r for r in report["cost"] if r["stage"] == "refit on all non-test rows")
    assert refit_row["trials"] == 2
