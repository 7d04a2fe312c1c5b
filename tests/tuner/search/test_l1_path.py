"""The L1 path: λ_max, the walk down, and one_se on a sparse problem against scikit-learn's L1 logistic CV."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from sklearn.linear_model import LogisticRegressionCV

from tuner import parse_spec, run_job
from tuner.errors import Cancelled, SpecError
from tuner.knobs import Knobs
from tuner.search import find_lambda_max, gradient_lambda_max, null_state, path_values
from tuner.train import load_dataset, train

N_INFORMATIVE, N_FEATURES = 5, 50


def _sparse(**over: Any) -> dict[str, Any]:
    """5 informative of 50 columns, a linear model on full batches (minibatch noise keeps weights off zero)."""
    spec: dict[str, Any] = {
        "name": "sparse-path", "seed": 0,
        "dataset": {"source": "synthetic", "task": "classification", "n_samples": 600,
                    "n_features": N_FEATURES, "n_informative": N_INFORMATIVE, "noise": 0.02,
                    "split": {"val": 0.25, "test": 0.2}},
        "model": {"kind": "linear"},
        "training": {"epochs": 80, "batch_size": 512, "lr": 0.05, "early_stopping": {"patience": 5}},
        "search": {"pruner": "none", "space": {"l1": {"low": 1e-4, "high": 1e-1, "log": True}},
                   "stages": [{"name": "l1", "params": ["l1"], "trials": 20, "path_eps": 0.02}]},
        "report": {"top_k": 2, "seeds": 1, "choose": "one_se"},
    }
    return spec | over


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small models train fastest on one thread, as ``run_job`` trains them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_stage_searching_l1_alone_is_a_path_of_30_points_by_default() -> None:
    spec = parse_spec(_sparse(search={"space": {"l1": {"low": 1e-4, "high": 1e-1, "log": True}},
                                      "stages": [{"name": "l1", "params": ["l1"]}]}))
    assert [(s.name, s.path, s.trials, s.path_eps) for s in spec.stages] == [
        ("baseline", False, 1, 1e-3), ("l1", True, 30, 1e-3)]
    spec = parse_spec(_sparse(search={"space": {"l1": {"low": 1e-4, "high": 1e-1, "log": True}},
                                      "stages": [{"name": "l1", "params": ["l1"], "trials": 5, "path": False}]}))
    assert not spec.stages[1].path


def test_a_path_walks_l1_alone() -> None:
    space = {"l1": {"low": 1e-4, "high": 1e-1, "log": True}, "l2": {"low": 1e-4, "high": 1e-1, "log": True}}
    with pytest.raises(SpecError) as err:
        parse_spec(_sparse(search={"space": space, "stages": [
            {"name": "both", "params": ["l1", "l2"], "trials": 5, "path": True}]}))
    assert {i.field: i.message for i in err.value.issues} == {
        "search.stages[0].path": "a path walks λ₁ alone, but stage 'both' searches ['l1', 'l2']"}


def test_lambda_max_removes_every_column_and_a_little_less_keeps_one() -> None:
    spec = parse_spec(_sparse())
    data = load_dataset(spec.dataset, spec.seed).without_test()
    knobs = Knobs()
    lam_max, how = find_lambda_max(spec, data, knobs, spec.seed)
    assert how["method"] == "gradient" and lam_max == gradient_lambda_max(spec, data, knobs, spec.seed)

    def kept(lam: float) -> int:
        init = null_state(spec, data, knobs, spec.seed)
        return train(data, spec.model, spec.training, replace(knobs, l1=lam), spec.seed, init=init).features_kept

    assert kept(lam_max) == 0
    assert kept(lam_max / 1.02) >= 1


def test_an_mlps_lambda_max_is_found_by_bisection() -> None:
    spec = parse_spec(_sparse(
        dataset={"source": "synthetic", "task": "classification", "n_samples": 200, "n_features": 10,
                 "n_informative": 3, "noise": 0.02, "split": {"val": 0.25, "test": 0.2}},
        model={"kind": "mlp", "hidden": [4]},
        training={"epochs": 40, "batch_size": 512, "lr": 0.05, "early_stopping": {"patience": 5}}))
    data = load_dataset(spec.dataset, spec.seed).without_test()
    knobs = Knobs()
    lam_max, how = find_lambda_max(spec, data, knobs, spec.seed)
    assert how["method"] == "bisection" and lam_max != how["gradient"]  # L1 on every layer: the gradient only guesses

    def kept(lam: float) -> int:
        init = null_state(spec, data, knobs, spec.seed)
        return train(data, spec.model, spec.training, replace(knobs, l1=lam), spec.seed, init=init).features_kept

    assert kept(lam_max) == 0
    assert kept(lam_max / 1.05) >= 1


def test_sgd_momentum_scales_lambda_max_by_one_over_one_minus_mu() -> None:
    spec = parse_spec(_sparse())
    data = load_dataset(spec.dataset, spec.seed).without_test()
    adam = gradient_lambda_max(spec, data, Knobs(), spec.seed)
    sgd = parse_spec(_sparse(training={"epochs": 80, "batch_size": 512, "optimizer": "sgd", "lr": 0.05,
                                       "momentum": 0.9}))
    assert gradient_lambda_max(sgd, data, Knobs(), spec.seed) == pytest.approx(10 * adam, rel=1e-5)


def test_path_values_are_geometric_from_lambda_max_down() -> None:
    values = path_values(2.0, 1e-3, 4)
    assert values == pytest.approx([2.0, 0.2, 0.02, 0.002])


def _sklearn_noise_kept(X: np.ndarray, y: np.ndarray) -> int:
    with warnings.catch_warnings():  # penalty="l1" is deprecated in favour of l1_ratios in scikit-learn 1.8
        warnings.simplefilter("ignore", FutureWarning)
        model = LogisticRegressionCV(penalty="l1", solver="liblinear", Cs=20, cv=5, scoring="neg_log_loss",
                                     random_state=0).fit(X, y)
    kept = np.flatnonzero(np.abs(model.coef_).sum(axis=0) > 0)
    return int(sum(k >= N_INFORMATIVE for k in kept))


def test_one_se_on_the_path_finds_the_informative_columns_and_no_more_noise_than_sklearn(
        sqlite_url: str, tmp_path: Path) -> None:
    spec = parse_spec(_sparse())
    report = run_job(spec, storage=sqlite_url, out_dir=tmp_path / "out").model_dump(mode="json")

    trials = optuna.load_study(study_name="sparse-path/l1", storage=sqlite_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 20  # the budget is the path's points
    assert [t.user_attrs["path_index"] for t in trials] == list(range(20))
    assert [t.user_attrs["warm_start"] for t in trials] == ["null model"] + ["previous point"] * 19

    path = report["l1_path"]
    stage = report["stages"][1]
    assert stage["l1_max"] == path[0]["l1"] and stage["l1_max_found"]["method"] == "gradient"
    assert [p["l1"] for p in path] == sorted((p["l1"] for p in path), reverse=True)
    assert path[0]["features_kept"] == 0 and path[0]["kept"] == []
    assert path[-1]["features_kept"] > 2 * N_INFORMATIVE
    kept = [p["features_kept"] for p in path]
    assert all(b >= a - max(2, a // 8) for a, b in pairwise(kept)), kept  # monotone up to noise
    assert all(p["val_loss_se"] > 0 and len(p["kept"]) == p["features_kept"] for p in path)

    feats = report["features"]
    assert report["chosen"]["stage"] == "l1"
    assert feats["informative_kept"] >= N_INFORMATIVE - 1
    noise_kept = len(feats["kept"]) - feats["informative_kept"]
    data = load_dataset(spec.dataset, spec.seed)
    X = torch.cat([data.train.X, data.val.X]).numpy()  # scikit-learn cross-validates over the same non-test rows
    y = torch.cat([data.train.y, data.val.y]).numpy()
    assert noise_kept <= _sklearn_noise_kept(X, y)
    stability = {f["name"]: f["share"] for f in feats["stability"]}  # the chosen λ₁ over its 2 seed runs
    assert feats["seeds"] == 2 and set(feats["kept"]) <= set(stability)
    assert set(stability.values()) <= {0.5, 1.0}

    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="l1_path"' in page and 'id="cost"' in page
    assert (tmp_path / "out" / "plots" / "l1_path.png").exists()


class _StopAfter:
    """Progress that asks the job to stop once ``n`` path points have finished (a cancel mid-path)."""

    def __init__(self, n: int) -> None:
        self.n, self.done = n, 0

    def stage_started(self, name: str, study_name: str, total: int, done: int) -> None: ...

    def trial_finished(self, stage: str, trial: optuna.trial.FrozenTrial) -> None:
        self.done += stage == "l1"

    def stage_finished(self, outcome: Any) -> None: ...

    def __call__(self) -> bool:
        return self.done >= self.n


def test_a_stopped_path_resumes_at_its_next_point_with_the_same_lambda_max(sqlite_url: str) -> None:
    spec = parse_spec(_sparse(search={"pruner": "none", "space": {"l1": {"low": 1e-4, "high": 1e-1, "log": True}},
                                      "stages": [{"name": "l1", "params": ["l1"], "trials": 6, "path_eps": 0.05}]},
                              report={"top_k": 1, "seeds": 0, "choose": "best"}))
    stop = _StopAfter(3)
    with pytest.raises(Cancelled):
        run_job(spec, storage=sqlite_url, progress=stop, should_stop=stop)
    study = optuna.load_study(study_name="sparse-path/l1", storage=sqlite_url)
    lam_max = study.user_attrs["l1_max"]
    assert sorted(t.user_attrs["path_index"] for t in study.get_trials(states=(TrialState.COMPLETE,))) == [0, 1, 2]

    report = run_job(spec, storage=sqlite_url).model_dump(mode="json")
    study = optuna.load_study(study_name="sparse-path/l1", storage=sqlite_url)
    done = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.user_attrs["path_index"])
    assert [t.user_attrs["path_index"] for t in done] == list(range(6))  # each point once, none lost or doubled
    assert study.user_attrs["l1_max"] == lam_max
    assert [p["l1"] for p in report["l1_path"]] == pytest.approx(path_values(lam_max, 0.05, 6))
    assert [t.user_attrs["warm_start"] for t in done][3:] == ["cold (resumed)", "previous point", "previous point"]
