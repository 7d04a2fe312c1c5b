"""Image folders (``source: images``): one subfolder per class, read with Pillow, resized, scaled per channel."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _images import CLASSES, write_images, zip_folder, zip_members

from tuner import DataError, SpecError, load_model, parse_spec, run_job
from tuner.train import evaluate, load_dataset

Tiny = Callable[..., dict[str, Any]]
CNN = {"kind": "cnn", "channels": [4], "kernel": 3, "hidden": [8]}
TWO_TRIALS = {"space": {"l2": None, "dropout": {"low": 0.0, "high": 0.3}},
              "stages": [{"name": "dropout", "params": ["dropout"], "trials": 2}]}
NETS = '''
from torch import nn


def small_conv(input_shape, n_outputs):
    """One conv layer, dropout, a head: built for the (C, H, W) it is given."""
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(),
                         nn.Linear(4 * h * w, n_outputs))
'''


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(folder))
    return folder


def images_spec(tiny: Tiny, path: str = "shapes", **dataset: Any) -> dict[str, Any]:
    return tiny(dataset={"source": "images", "path": path, "name": None, **dataset}, model=CNN,
                training={"epochs": 2, "batch_size": 8}, search=TWO_TRIALS)


def test_a_folder_of_gray_images_reads_as_one_channel_with_folder_names_as_classes(tiny: Tiny,
                                                                                  data_dir: Path) -> None:
    write_images(data_dir / "shapes")
    data = load_dataset(parse_spec(images_spec(tiny)).dataset, 0)
    assert data.input_shape == (1, 8, 8) and data.task == "classification"
    assert data.classes == list(CLASSES) and all(isinstance(c, str) for c in data.classes)
    assert len(data.train) + len(data.val) + len(data.test or []) == 36
    # standardized per channel on the training split: one mean and std, the training pixels' mean 0 and std 1
    assert data.scaling == "channel" and len(data.feature_mean) == len(data.feature_std) == 1
    assert abs(float(data.train.X.mean())) < 1e-5 and abs(float(data.train.X.std(unbiased=False)) - 1) < 1e-4
    assert 0 < data.feature_mean[0] < 1  # pixels were scaled to [0, 1] first


def test_rgb_images_read_as_three_channels_unless_told_one_and_resize_to_size(tiny: Tiny, data_dir: Path) -> None:
    write_images(data_dir / "shapes", rgb=True, suffix=".jpg")
    data = load_dataset(parse_spec(images_spec(tiny)).dataset, 0)
    assert data.input_shape == (3, 8, 8) and len(data.feature_mean) == 3
    small = load_dataset(parse_spec(images_spec(tiny, size=[4, 6], channels=1)).dataset, 0)
    assert small.input_shape == (1, 4, 6) and small.n_features == 24


def test_an_image_folder_tunes_end_to_end_with_the_cnn_and_exports(tiny: Tiny, data_dir: Path) -> None:
    write_images(data_dir / "shapes")
    spec = parse_spec(images_spec(tiny))
    out = data_dir / "out"
    report = run_job(spec, storage=f"sqlite:///{data_dir / 'r.db'}", out_dir=out)
    assert report.task == "classification" and [(s.name, s.completed) for s in report.stages][-1] == ("dropout", 2)
    assert report.classes == list(CLASSES) and report.preprocessing is None  # no table was one-hot encoded
    meta = json.loads((out / "model.json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["input_shape"] == [1, 8, 8]
    assert meta["feature_scaling"]["per"] == "channel" and len(meta["feature_scaling"]["mean"]) == 1
    assert meta["preprocessing"] is None
    data = load_dataset(spec.dataset, spec.seed)
    assert data.test is not None
    assert abs(evaluate(load_model(out), data.test, data.task)[0] - report.chosen.test_loss) <= 1e-5


def test_an_image_folder_feeds_a_plug_in_model(tiny: Tiny, data_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "nets.py").write_text(NETS)
    monkeypatch.setenv("REGTUNE_MODELS_DIR", str(models))
    write_images(data_dir / "shapes", rgb=True, size=(6, 6))
    spec = parse_spec(images_spec(tiny, size=[5, 5]) | {"model": {"kind": "module", "factory": "nets:small_conv"}})
    report = run_job(spec, storage=f"sqlite:///{data_dir / 'r.db'}")
    assert report.chosen.test_loss is not None and np.isfinite(report.chosen.test_loss)


def test_cross_validated_folds_are_standardized_per_channel(tiny: Tiny, data_dir: Path) -> None:
    write_images(data_dir / "shapes", rgb=True)
    data = load_dataset(parse_spec(images_spec(tiny, split={"val": None, "folds": 2})).dataset, 0)
    for fold in data.folds:
        means = fold.train.X.mean(dim=(0, 2, 3))
        assert fold.scaling == "channel" and torch.allclose(means, torch.zeros(3), atol=1e-5)


@pytest.mark.parametrize(("make", "field", "says"), [
    (lambda d: (write_images(d, size=(8, 8)), write_images(d, size=(6, 7), classes=("other",))),
     "dataset.size", "differ in size (8x8 in bright/000.png, 6x7 in other/000.png)"),
    (lambda d: write_images(d, classes=("only",)), "dataset.path", "at least 2 class folders"),
    (lambda d: (write_images(d), (d / "dark" / "zz.png").write_bytes(b"not a png")),
     "dataset.path", "dark/zz.png in 'shapes' cannot be read as an image"),
    (lambda d: (write_images(d), (d / "dark" / "yy.png").write_bytes(b"GIF89a" + bytes(40))),
     "dataset.path", "dark/yy.png in 'shapes' cannot be read as an image: it is not a PNG or JPEG image"),
    (lambda d: (write_images(d), (d / "dark" / "cut.png").write_bytes((d / "dark" / "000.png").read_bytes()[:60])),
     "dataset.path", "dark/cut.png in 'shapes' cannot be decoded"),
    (lambda d: d.write_text("a file"), "dataset.path", "must be a folder with one subfolder per class"),
])
def test_unusable_image_folders_name_the_field_the_file_and_the_rule(tiny: Tiny, data_dir: Path, make: Any,
                                                                     field: str, says: str) -> None:
    make(data_dir / "shapes")
    with pytest.raises(DataError) as info:
        load_dataset(parse_spec(images_spec(tiny)).dataset, 0)
    assert info.value.issues[0].field == field and says in info.value.issues[0].message


def test_hidden_and_other_files_are_skipped(tiny: Tiny, data_dir: Path) -> None:
    write_images(data_dir / "shapes")
    (data_dir / "shapes" / "notes.txt").write_text("not a class")
    (data_dir / "shapes" / "dark" / ".DS_Store").write_bytes(b"\0")
    (data_dir / "shapes" / "dark" / "readme.md").write_text("#")
    assert load_dataset(parse_spec(images_spec(tiny)).dataset, 0).classes == list(CLASSES)


def test_an_image_folder_stays_inside_the_data_dir(tiny: Tiny, data_dir: Path, tmp_path: Path) -> None:
    for path in ("../shapes", "/etc", ".hidden"):
        with pytest.raises(SpecError) as spec_info:
            parse_spec(images_spec(tiny, path=path))
        assert [i.field for i in spec_info.value.issues] == ["dataset.path"]
    outside = write_images(tmp_path / "outside")
    (data_dir / "link").symlink_to(outside)
    with pytest.raises(DataError, match="must stay inside REGTUNE_DATA_DIR"):
        load_dataset(parse_spec(images_spec(tiny, path="link")).dataset, 0)
    write_images(data_dir / "shapes")
    (data_dir / "shapes" / "dark" / "away.png").symlink_to(outside / "dark" / "000.png")
    with pytest.raises(DataError, match=r"dark/away\.png in 'shapes' is a link out of REGTUNE_DATA_DIR"):
        load_dataset(parse_spec(images_spec(tiny)).dataset, 0)


def test_too_many_values_are_refused_before_decoding(tiny: Tiny, data_dir: Path) -> None:
    write_images(data_dir / "shapes")
    with pytest.raises(DataError, match="REGTUNE_MAX_DATA_CELLS"):
        load_dataset(parse_spec(images_spec(tiny)).dataset, 0, max_cells=36 * 64 - 1)


def upload(data_dir: Path, body: bytes, fmt: str = "zip") -> str:
    """``body`` stored as POST /datasets stores it, under uploads/<sha256>.<fmt>; its id."""
    import hashlib

    sha = hashlib.sha256(body).hexdigest()
    (data_dir / "uploads").mkdir(exist_ok=True)
    (data_dir / "uploads" / f"{sha}.{fmt}").write_bytes(body)
    return sha


def test_an_uploaded_zip_reads_as_the_folder_does(tiny: Tiny, data_dir: Path, tmp_path: Path) -> None:
    folder = write_images(tmp_path / "shapes", rgb=True)
    (folder / "dark" / ".DS_Store").write_bytes(b"\0")
    (folder / "notes.txt").write_text("skipped")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._000.png").write_bytes(b"\0")
    dataset_id = upload(data_dir, zip_folder(folder, top="shapes"))
    spec = images_spec(tiny, size=[4, 4])
    spec["dataset"] = {"source": "upload", "id": dataset_id, "size": [4, 4], "split": spec["dataset"]["split"]}
    zipped = load_dataset(parse_spec(spec).dataset, 0)
    write_images(data_dir / "shapes", rgb=True)  # the same files, as a folder in the data dir
    local = load_dataset(parse_spec(images_spec(tiny, size=[4, 4])).dataset, 0)
    assert zipped.classes == local.classes == list(CLASSES) and zipped.input_shape == (3, 4, 4)
    assert torch.equal(zipped.train.X, local.train.X) and torch.equal(zipped.test.X, local.test.X)  # type: ignore[union-attr]


@pytest.mark.parametrize(("fmt", "dataset", "field"), [
    ("zip", {"target": "label"}, "dataset.target"),
    ("zip", {"max_levels": 5}, "dataset.max_levels"),
    ("csv", {"target": "label", "size": [4, 4]}, "dataset.size"),
])
def test_an_upload_is_read_as_its_format_says(tiny: Tiny, data_dir: Path, tmp_path: Path, fmt: str,
                                              dataset: dict[str, Any], field: str) -> None:
    body = b"a,label\n1,0\n2,1\n" if fmt == "csv" else zip_folder(write_images(tmp_path / "s"))
    spec = parse_spec(tiny(dataset={"source": "upload", "id": upload(data_dir, body, fmt), "name": None, **dataset}))
    with pytest.raises(DataError) as info:
        load_dataset(spec.dataset, 0)
    assert info.value.issues[0].field == field


def test_an_unsafe_zip_member_is_refused_when_read_too(tiny: Tiny, data_dir: Path) -> None:
    dataset_id = upload(data_dir, zip_members({"a/1.png": b"", "../b/2.png": b""}))
    spec = parse_spec(tiny(dataset={"source": "upload", "id": dataset_id, "name": None}))
    with pytest.raises(DataError, match=r"member '\.\./b/2\.png' must not have a '\.\.' part"):
        load_dataset(spec.dataset, 0)
