"""The built-in CNN (spatial dropout per conv block) and image-shaped data from .npz files or sklearn's digits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tuner import DataError, SpecError, load_model, parse_spec, run_job
from tuner.train import evaluate, load_dataset

Tiny = Callable[..., dict[str, Any]]
CNN = {"kind": "cnn", "channels": [4, 6], "kernel": 3, "hidden": [8], "batch_norm": True}


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """90 3x6x6 images of two classes (a bright or a dark centre), with a fold array, in REGTUNE_DATA_DIR."""
    rng = np.random.default_rng(0)
    y = np.arange(90) % 2
    X = rng.normal(size=(90, 3, 6, 6)).astype(np.float32)
    X[:, :, 2:4, 2:4] += np.where(y == 1, 2.0, -2.0)[:, None, None, None]
    fold = np.array(["train"] * 50 + ["val"] * 20 + ["test"] * 20)
    np.savez(tmp_path / "img.npz", X=X, y=y, fold=fold)
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    return tmp_path


def test_npz_images_keep_their_shape_and_folds(tiny: Tiny, images: Path) -> None:
    spec = parse_spec(tiny(dataset={"source": "npz", "path": "img.npz", "name": None, "split": None}))
    data = load_dataset(spec.dataset, spec.seed)
    assert data.input_shape == (3, 6, 6) and data.task == "classification" and data.classes == [0, 1]
    assert (len(data.train), len(data.val), len(data.test or [])) == (50, 20, 20)


def test_digits_are_offered_as_one_channel_images(tiny: Tiny) -> None:
    spec = parse_spec(tiny(dataset={"name": "digits_images"}))
    assert load_dataset(spec.dataset, spec.seed).input_shape == (1, 8, 8)


@pytest.mark.parametrize(("write", "says"), [
    (lambda p: np.savez(p, X=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4)), "cannot read"),
    (lambda p: np.savez(p, X=np.zeros((4, 2))), "needs an array 'y'"),
    (lambda p: np.savez(p, X=np.zeros((4, 2)), y=np.zeros(3)), "one value per example"),
    (lambda p: np.savez(p, X=np.full((4, 2), np.nan), y=np.zeros(4)), "NaN or inf"),
])
def test_unusable_npz_files_name_the_path_and_the_rule(tiny: Tiny, images: Path, write: Any, says: str) -> None:
    write(images / "bad.npz")
    spec = parse_spec(tiny(dataset={"source": "npz", "path": "bad.npz", "name": None}))
    with pytest.raises(DataError) as info:
        load_dataset(spec.dataset, 0)
    assert info.value.issues[0].field == "dataset.path" and says in info.value.issues[0].message


@pytest.mark.parametrize("path", ["../img.npz", "/etc/img.npz", ".hidden.npz"])
def test_an_npz_outside_the_data_dir_is_refused_at_submit(tiny: Tiny, images: Path, path: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(tiny(dataset={"source": "npz", "path": path, "name": None}))
    assert [i.field for i in info.value.issues] == ["dataset.path"]


def test_an_npz_link_out_of_the_data_dir_is_refused(tiny: Tiny, images: Path, tmp_path_factory: Any) -> None:
    outside = tmp_path_factory.mktemp("outside") / "img.npz"
    outside.write_bytes((images / "img.npz").read_bytes())
    (images / "link.npz").symlink_to(outside)
    spec = parse_spec(tiny(dataset={"source": "npz", "path": "link.npz", "name": None}))
    with pytest.raises(DataError, match="must stay inside REGTUNE_DATA_DIR"):
        load_dataset(spec.dataset, 0)


@pytest.mark.parametrize(("model", "field"), [
    ({"kind": "mlp", "channels": [4]}, "model.channels"),
    ({"kind": "cnn", "kernel": 4}, "model.kernel"),
    ({"kind": "cnn", "channels": []}, "model.channels"),
])
def test_cnn_fields_are_checked(tiny: Tiny, model: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(tiny(model={"hidden": None, **model}))
    assert [i.field for i in info.value.issues] == [field]


def test_a_cnn_on_flat_examples_fails_before_the_first_stage(tiny: Tiny, tmp_path: Path) -> None:
    spec = parse_spec(tiny(model=CNN))
    with pytest.raises(SpecError) as info:
        run_job(spec, storage=f"sqlite:///{tmp_path / 'r.db'}")
    assert info.value.issues[0].field == "model.kind" and "image-shaped" in info.value.issues[0].message


def test_a_cnn_tunes_one_spatial_dropout_rate_per_block_and_exports(tiny: Tiny, images: Path) -> None:
    spec = parse_spec(tiny(
        dataset={"source": "npz", "path": "img.npz", "name": None, "split": None}, model=CNN,
        search={"space": {"l2": None, "dropout": {"low": 0.05, "high": 0.3, "per_layer": True}},
                "stages": [{"name": "dropout", "params": ["dropout"], "trials": 2}]}))
    out = images / "out"
    report = run_job(spec, storage=f"sqlite:///{images / 'r.db'}", out_dir=out).model_dump(mode="json")
    assert report["dropout_layers"] == {"dropout_0": "features.0.4", "dropout_1": "features.1.4",
                                        "dropout_2": "dense.4"}
    model = load_model(out)
    assert [type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d)] == [
        "Dropout2d", "Dropout2d", "Dropout"]
    data = load_dataset(spec.dataset, spec.seed)
    assert data.test is not None
    assert abs(evaluate(model, data.test, data.task)[0] - report["chosen"]["test_loss"]) <= 1e-5
