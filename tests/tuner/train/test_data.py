"""Data: splits, scaling fitted on the training split only, CSV files confined to REGTUNE_DATA_DIR."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tuner import DataError, parse_spec
from tuner.train import load_dataset

Tiny = Callable[..., dict[str, Any]]


def _csv(path: Path, rows: list[list[Any]]) -> None:
    path.write_text("\n".join(",".join(str(v) for v in row) for row in rows) + "\n")


def test_split_sizes_stratified_and_scaled_on_train_only(tiny: Tiny) -> None:
    spec = parse_spec(tiny())
    data = load_dataset(spec.dataset, seed=0)
    assert data.test is not None
    sizes = (len(data.train), len(data.val), len(data.test))
    assert sum(sizes) == 569 and sizes[1] == pytest.approx(114, abs=1) and sizes[2] == pytest.approx(114, abs=1)
    assert np.allclose(data.train.X.mean(0).numpy(), 0.0, atol=1e-5)
    assert np.allclose(data.train.X.std(0, unbiased=False).numpy(), 1.0, atol=1e-4)
    assert not np.allclose(data.val.X.mean(0).numpy(), 0.0, atol=1e-3)  # val is scaled with train's statistics
    shares = [float(s.y.float().mean()) for s in (data.train, data.val, data.test)]
    assert max(shares) - min(shares) < 0.02  # stratified: the class balance is the same in every split
    assert data.feature_names[0] == "mean radius"


def test_synthetic_names_its_informative_features(tiny: Tiny) -> None:
    spec = parse_spec(tiny(dataset={"source": "synthetic", "name": None, "n_samples": 200, "n_features": 12,
                                    "n_informative": 3}))
    data = load_dataset(spec.dataset, seed=0)
    assert data.n_features == 12 and data.informative == ["x00", "x01", "x02"]


def test_regression_target_is_standardized_and_its_scale_kept(tiny: Tiny) -> None:
    spec = parse_spec(tiny(dataset={"name": "diabetes"}))
    data = load_dataset(spec.dataset, seed=0)
    assert data.task == "regression" and data.n_outputs == 1
    assert abs(float(data.train.y.mean())) < 1e-5 and data.target_scale > 50


def test_csv_with_a_fold_column(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    rows: list[list[Any]] = [["a", "b", "label", "fold"]]
    for i in range(60):
        fold = "train" if i < 40 else ("val" if i < 50 else "test")
        rows.append([rng.normal(), rng.normal(), "yes" if i % 2 else "no", fold])
    _csv(tmp_path / "d.csv", rows)
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    spec = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "d.csv", "target": "label",
                                    "split": {"column": "fold", "val": None, "test": None}}))
    data = load_dataset(spec.dataset, seed=0)
    assert data.test is not None
    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 10)
    assert data.feature_names == ["a", "b"]  # neither the target nor the fold column is a feature
    assert data.task == "classification" and data.n_outputs == 2


def test_csv_path_may_not_escape_the_data_dir(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    _csv(tmp_path / "secret.csv", [["a", "y"], [1, 0], [2, 1]])
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path / "data"))
    spec = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "../secret.csv", "target": "y"}))
    with pytest.raises(DataError) as info:
        load_dataset(spec.dataset, seed=0)
    assert info.value.issues[0].field == "dataset.path"
    assert "must stay inside REGTUNE_DATA_DIR" in info.value.issues[0].message


def test_csv_with_text_in_a_feature_column(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _csv(tmp_path / "d.csv", [["a", "y"], [1, 0], ["oops", 1]])
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    spec = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "d.csv", "target": "y"}))
    with pytest.raises(DataError, match="column 'a' must be numeric, but line 3 holds 'oops'"):
        load_dataset(spec.dataset, seed=0)


def test_csv_errors_read_as_a_person_writes(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    spec = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "missing.csv", "target": "y"}))
    with pytest.raises(DataError, match=f"cannot read 'missing.csv' in {tmp_path} \\(REGTUNE_DATA_DIR"):
        load_dataset(spec.dataset, seed=0)
    _csv(tmp_path / "d.csv", [["a", "y", "fold"], [1, 0, "train"], [2, 1, "validation"]])
    spec = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "d.csv", "target": "y",
                                    "split": {"column": "fold", "val": None, "test": None}}))
    with pytest.raises(DataError) as info:
        load_dataset(spec.dataset, seed=0)
    assert info.value.issues[0].message == "values must be train, val or test, but got 'validation'"
