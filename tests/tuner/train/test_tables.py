"""Tables with text categories and missing values: imputed, one-hot and scaled, fitted on the training split only."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _tables import houses, write_csv, write_parquet

from tuner import DataError, SpecError, encode_rows, load_model, parse_spec, run_job
from tuner.train import Split, TablePrep, evaluate, load_dataset

Tiny = Callable[..., dict[str, Any]]

def _spec(tiny: Tiny, **dataset: Any) -> Any:
    return parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "h.csv", "target": "label", **dataset}))


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    return tmp_path


def test_categories_are_one_hot_missing_values_imputed_numbers_scaled(tiny: Tiny, data_dir: Path) -> None:
    write_csv(data_dir / "h.csv", houses())
    data = load_dataset(_spec(tiny, max_levels=4).dataset, seed=0)
    prep = data.preprocessing
    assert prep is not None and data.classes == ["no", "yes"]  # string labels stay strings
    assert data.columns == ["age", "city", "member", "income"]
    # at most 4 columns for city (3 levels and other); member's True/False read as the levels true and false
    assert data.feature_names[:1] == ["age"] and data.feature_names[-3:] == ["member=false", "member=true", "income"]
    city = [n for n in data.feature_names if n.startswith("city=")]
    assert len(city) == 4 and city[-1] == "city=other" and "city=paris" in city
    age, cat, member, income = prep.columns
    assert (age.missing, cat.missing, member.missing, income.missing) == (11, 9, 40, 0)
    assert cat.fill == "paris" and len(cat.levels) == 3 and len(cat.other) == 3
    X = data.train.X.numpy()
    number = [data.feature_names.index(n) for n in ("age", "income")]
    assert np.allclose(X[:, number].mean(0), 0.0, atol=1e-5) and np.allclose(X[:, number].std(0), 1.0, atol=1e-4)
    onehot = [j for j in range(data.n_features) if j not in number]
    assert set(np.unique(X[:, onehot])) == {0.0, 1.0}
    assert (X[:, [data.feature_names.index(n) for n in city]].sum(1) == 1).all()  # every row has one city
    assert data.columns_kept([j == data.feature_names.index("city=other") for j in range(data.n_features)]) == [
        False, True, False, False]  # a category is kept when any of its levels is


def fitted(prep: TablePrep | None) -> list[tuple[Any, ...]]:
    """What was fitted per column (not the count of missing values, which is every split's)."""
    assert prep is not None
    return [(c.name, c.fill, c.mean, c.std, c.levels, c.other) for c in prep.columns]


def test_the_preprocessing_is_fitted_on_the_training_split_only(tiny: Tiny, data_dir: Path) -> None:
    """Val and test rows changed beyond recognition move neither the median, the levels nor the scaling."""
    rows = houses(fold=True)
    changed = [r | ({"age": 1000 + i, "city": f"new{i}", "income": None} if r["fold"] != "train" else {})
               for i, r in enumerate(rows)]
    split = {"column": "fold", "val": None, "test": None}
    loaded = []
    for name, table in (("a.csv", rows), ("b.csv", changed)):
        write_csv(data_dir / name, table)
        loaded.append(load_dataset(_spec(tiny, path=name, split=split).dataset, seed=0))
    a, b = loaded
    assert fitted(a.preprocessing) == fitted(b.preprocessing) and a.feature_names == b.feature_names
    assert torch.equal(a.train.X, b.train.X)
    assert b.preprocessing is not None and b.preprocessing.rows == 80
    city = [j for j, n in enumerate(b.feature_names) if n.startswith("city=")]
    assert "city=other" not in b.feature_names  # fewer than 20 levels in train: no 'other' column
    assert b.test is not None and float(b.test.X[:, city].abs().sum()) == 0.0  # unseen levels: no column
    income = b.feature_names.index("income")
    assert torch.allclose(b.val.X[:, income], torch.tensor((b.preprocessing.columns[3].fill
                                                             - b.preprocessing.columns[3].mean)
                                                            / b.preprocessing.columns[3].std, dtype=torch.float32))


def test_a_parquet_table_reads_as_the_same_table_in_csv(tiny: Tiny, data_dir: Path) -> None:
    rows = houses()
    write_csv(data_dir / "h.csv", rows)
    (data_dir / "uploads").mkdir()
    write_parquet(data_dir / "uploads" / f"{'a' * 64}.parquet", rows)  # where POST /datasets stores an upload
    from_csv = load_dataset(_spec(tiny).dataset, seed=0)
    from_parquet = load_dataset(_spec(tiny, source="upload", path=None, id="a" * 64).dataset, seed=0)
    assert from_parquet.preprocessing == from_csv.preprocessing
    assert from_parquet.classes == from_csv.classes == ["no", "yes"]
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(from_parquet, part).X, getattr(from_csv, part).X)


def test_folds_rescale_numbers_and_leave_one_hot_columns_0_or_1(tiny: Tiny, data_dir: Path) -> None:
    write_csv(data_dir / "h.csv", houses())
    data = load_dataset(_spec(tiny, split={"test": 0.2, "folds": 3, "val": None}).dataset, seed=0)
    assert len(data.folds) == 3
    for fold in data.folds:
        X = fold.train.X.numpy()
        number = [fold.feature_names.index(n) for n in ("age", "income")]
        assert np.allclose(X[:, number].mean(0), 0.0, atol=1e-5)
        assert set(np.unique(np.delete(X, number, axis=1))) == {0.0, 1.0}


def test_table_errors_name_the_column(tiny: Tiny, data_dir: Path) -> None:
    rows = houses(fold=True)
    for r in rows:
        if r["fold"] == "train":
            r["age"] = None
    write_csv(data_dir / "h.csv", rows)
    with pytest.raises(DataError, match="column 'age' has no value in the 80 training rows"):
        load_dataset(_spec(tiny, split={"column": "fold", "val": None, "test": None}).dataset, seed=0)
    write_csv(data_dir / "h.csv", houses())  # 121 lines × 5 cells read; one-hot, 120 rows × 10 inputs
    with pytest.raises(DataError, match=r"120 rows × 10 inputs, more than the 800 values allowed") as error:
        load_dataset(_spec(tiny).dataset, seed=0, max_cells=800)
    assert error.value.issues[0].field == "dataset.max_levels"
    with pytest.raises(SpecError) as info:
        parse_spec(tiny(dataset={"max_levels": 5}))  # the tiny spec's dataset is scikit-learn's
    assert info.value.issues[0].field == "dataset.max_levels" and "source csv or upload" in str(info.value)


def test_a_table_tunes_reports_its_preprocessing_and_exports_a_model_that_encodes_raw_rows(
        tiny: Tiny, data_dir: Path, tmp_path: Path) -> None:
    rows = houses(fold=True)
    write_csv(data_dir / "h.csv", rows)
    spec = parse_spec(tiny(
        dataset={"source": "csv", "name": None, "path": "h.csv", "target": "label", "max_levels": 4,
                 "split": {"column": "fold", "val": None, "test": None}},
        model={"kind": "linear", "hidden": None}, training={"epochs": 3, "batch_size": 32, "lr": 0.05},
        search={"space": {"l1": {"low": 1e-4, "high": 1e-1, "log": True, "allow_zero": True}, "l2": None,
                          "dropout": None},
                "stages": [{"name": "baseline", "params": [], "trials": 1}, {"name": "l1", "params": ["l1"],
                                                                             "trials": 3}]}))
    out = tmp_path / "out"
    report = run_job(spec, storage=f"sqlite:///{tmp_path}/runs.db", out_dir=out)
    assert report.classes == ["no", "yes"]
    prep = report.preprocessing
    assert prep is not None and prep.fitted_on == 80 and prep.max_levels == 4 and prep.inputs == 8
    assert [(c.name, c.kind, c.imputed, c.one_hot) for c in prep.columns] == [
        ("age", "number", 11, None), ("city", "category", 9, 4), ("member", "category", 40, 2),
        ("income", "number", 0, None)]
    assert report.features is not None and report.l1_path
    columns = {"age", "city", "member", "income"}
    assert set(report.features.kept) | set(report.features.removed) == columns  # per column, not per level
    assert all(set(p.kept) <= columns and p.features_kept == len(p.kept) for p in report.l1_path)
    assert report.l1_path[0].features_kept == 0  # λ_max keeps no column
    markdown = (out / "report.md").read_text()
    assert "## Data" in markdown and "Classes: no, yes." in markdown
    assert "| city | category | 9 | paris | 4: 3 levels + other (3 rare levels) |" in markdown
    assert 'id="preprocessing"' in (out / "report.html").read_text()

    # the exported bundle encodes raw rows as training did: the test rows give the report's test loss again
    meta = json.loads((out / "model.json").read_text())
    assert meta["classes"] == ["no", "yes"] and meta["feature_scaling"] is None
    assert TablePrep.from_dict(meta["preprocessing"]).feature_names == meta["feature_names"]
    with (data_dir / "h.csv").open() as fh:
        test_rows = [r for r in csv.DictReader(fh) if r["fold"] == "test"]
    X = encode_rows(out, test_rows)
    data = load_dataset(spec.dataset, seed=spec.seed)
    assert data.test is not None and torch.allclose(X, data.test.X, atol=1e-6)
    y = torch.tensor([meta["classes"].index(r["label"]) for r in test_rows])
    loss, _ = evaluate(load_model(out), Split(X, y), "classification")
    assert loss == pytest.approx(report.chosen.test_loss, rel=1e-5)
