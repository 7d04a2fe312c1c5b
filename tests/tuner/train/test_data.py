"""Data: splits, scaling fitted on the training split only, CSV files confined to REGTUNE_DATA_DIR."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tuner import DataError, parse_spec
from tuner.train import data_dir, load_dataset

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
    (tmp_path / "data" / "link.csv").symlink_to(tmp_path / "secret.csv")  # ".." is refused at submit already
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path / "data"))
    spec = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "link.csv", "target": "y"}))
    with pytest.raises(DataError) as info:
        load_dataset(spec.dataset, seed=0)
    assert info.value.issues[0].field == "dataset.path"
    assert "must stay inside REGTUNE_DATA_DIR" in info.value.issues[0].message


def test_csv_with_inf_in_a_number_column(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _csv(tmp_path / "d.csv", [["a", "y"], [1, 0], ["-inf", 1]])  # text would be a category, NA a missing value
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    spec = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "d.csv", "target": "y"}))
    with pytest.raises(DataError) as info:
        load_dataset(spec.dataset, seed=0)
    assert str(info.value.issues[0]) == ("dataset.path: line 3, column 1 of 'd.csv' must be a finite number "
                                         "(a column of numbers holds no inf)")
    assert "-inf" not in str(info.value)  # an error quotes no file content


def _csv_spec(tiny: Tiny, path: str = "d.csv", target: str = "y") -> Any:
    return parse_spec(tiny(dataset={"source": "csv", "name": None, "path": path, "target": target}))


def _load_error(tiny: Tiny, path: str = "d.csv", target: str = "y", max_cells: int | None = None) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(_csv_spec(tiny, path, target).dataset, seed=0, max_cells=max_cells)
    assert len(info.value.issues) == 1
    return str(info.value.issues[0])


GOOD_ROWS = "".join(f"{i},{i % 3}\n" for i in range(30))


@pytest.mark.parametrize(("content", "error"), [
    (b"a,y\n1,0\n\xe9t\xe9,1\n" + GOOD_ROWS.encode(), "dataset.path: 'd.csv' must be UTF-8 text, but line 3 is not"),
    (b"a,y\n" + b"7" * 200_000 + b",1\n", "dataset.path: cannot read line 2 of 'd.csv': a field is larger than 128 kB"),
    (b"a,y\n1,0\n2,1\n", "dataset.split: 2 data rows are too few to split into train, val and test (val=0.2, "
                          "test=0.2); each needs at least one row"),
    (b"a,y\n" + "".join(f"{i},{'nan' if i == 4 else i / 7}\n" for i in range(30)).encode(),
     "dataset.target: line 6, column 2 of 'd.csv': the target is missing (empty, NaN or NA); every row needs one"),
    (b"a,y\n" + "".join(f"{i},{'' if i == 4 else i % 2}\n" for i in range(30)).encode(),
     "dataset.target: line 6, column 2 of 'd.csv': the target is missing (empty, NaN or NA); every row needs one"),
    (b"a,y\n1,0\n\n2,1,3\n", "dataset.path: line 4 of 'd.csv' has 3 fields, the header 2"),
    (b"PASSWORD=hunter2\n1\n", "dataset.target: column 'y' is not in the header of 'd.csv' (line 1, 1 columns)"),
])
def test_bad_csv_files_fail_naming_the_field_and_line(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     content: bytes, error: str) -> None:
    (tmp_path / "d.csv").write_bytes(content)
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    assert _load_error(tiny) == error
    assert "hunter2" not in error and "\\xe9" not in error


def test_files_that_are_not_regular_are_refused_before_they_are_opened(
        tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(tmp_path / "pipe.csv")  # open() on a FIFO with no writer blocks forever
    (tmp_path / "folder.csv").mkdir()
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    for name in ("pipe.csv", "folder.csv"):
        assert _load_error(tiny, name) == (f"dataset.path: must be a regular file, but {name!r} is not (a folder, "
                                           "a FIFO or a device)")


def test_a_link_to_a_dotfile_is_refused(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("y,PASSWORD\n1,hunter2\n")
    (tmp_path / "d.csv").symlink_to(tmp_path / ".env")
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    assert _load_error(tiny) == "dataset.path: must name no hidden file or folder, but 'd.csv' leads to one"


def test_the_default_data_dir_is_a_data_folder(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    _csv(tmp_path / "d.csv", [["a", "y"], *[[i, i % 2] for i in range(30)]])  # in the working directory: not found
    _csv(tmp_path / "data" / "e.csv", [["a", "y"], *[[i, i % 2] for i in range(30)]])
    monkeypatch.delenv("REGTUNE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data_dir() == tmp_path / "data"
    assert _load_error(tiny).startswith("dataset.path: cannot read 'd.csv'")
    assert len(load_dataset(_csv_spec(tiny, "e.csv").dataset, seed=0).train) == 18


def test_a_csv_over_the_cell_limit_is_refused_while_it_is_read(tiny: Tiny, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _csv(tmp_path / "d.csv", [["a", "b", "y"], *[[i, -i, i % 2] for i in range(40)]])
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    assert _load_error(tiny, max_cells=100) == ("dataset.path: 'd.csv' holds more than 100 cells (rows × columns), "
                                                "the most allowed (REGTUNE_MAX_DATA_CELLS)")
    assert len(load_dataset(_csv_spec(tiny).dataset, seed=0, max_cells=123).train) == 24  # 41 × 3 cells


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
    message = info.value.issues[0].message
    assert message == "values must be train, val or test, but line 3, column 3 of 'd.csv' is not"
    assert "np.str_" not in str(info.value)
