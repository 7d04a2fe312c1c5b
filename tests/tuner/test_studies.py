"""The example studies: every file is a valid spec; the linear and sparse ones give the answers they promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegressionCV

from tuner import load_spec, parse_spec, run_job
from tuner.limits import Limits, check_limits
from tuner.train import load_dataset

STUDIES = sorted((Path(__file__).parents[2] / "studies").glob("*.yaml"))


def test_there_are_the_promised_studies() -> None:
    names = {p.stem for p in STUDIES}
    assert {"digits-mlp", "breast-cancer-linear", "synthetic-sparse", "diabetes-mlp"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_study_is_a_valid_spec(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.stages[0].params == []
    assert check_limits(spec, Limits(max_parallelism=64)) == []  # within the default limits on cost


def _smaller(path: Path, **trials: int) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    for stage in data["search"]["stages"]:
        stage["trials"] = trials.get(stage["name"], stage["trials"])
    return data


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-learn's notices about its coming defaults
def test_linear_breast_cancer_matches_logistic_regression_cv(tmp_path: Path) -> None:
    spec = parse_spec(_smaller(Path("studies/breast-cancer-linear.yaml"), l2=6, joint=4))
    report = run_job(spec, storage=f"sqlite:///{tmp_path}/bc.db")
    data = load_dataset(spec.dataset, spec.seed)  # the same split and scaling the job used
    assert data.test is not None
    X_fit = torch.cat([data.train.X, data.val.X]).numpy()
    y_fit = torch.cat([data.train.y, data.val.y]).numpy()
    sk = LogisticRegressionCV(Cs=20, cv=5, max_iter=5000).fit(X_fit, y_fit)
    sk_acc = float(sk.score(data.test.X.numpy(), data.test.y.numpy()))
    ours = report.chosen.test_acc
    assert ours is not None
    assert abs(ours - sk_acc) <= 0.02, (ours, sk_acc)


def test_synthetic_sparse_keeps_the_informative_features(tmp_path: Path) -> None:
    spec = parse_spec(_smaller(Path("studies/synthetic-sparse.yaml"), l1=16))
    report = run_job(spec, storage=f"sqlite:///{tmp_path}/ss.db")
    f = report.features
    assert f is not None and f.informative_kept is not None and f.noise_removed is not None
    assert f.informative_total == 5 and f.noise_total == 45
    assert f.informative_kept >= 4
    assert f.noise_removed >= 30
    assert set(f.kept) | set(f.removed) == {f"x{i:02d}" for i in range(50)}
