"""Plug-in models: only the operator's factories are ever imported; a bad factory fails the job before any stage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from api.cli import main as regtune
from tuner import SpecError, load_model, load_spec, parse_spec, run_job
from tuner.plugins import list_factories, load_factory
from tuner.train import evaluate, load_dataset

Tiny = Callable[..., dict[str, Any]]

NETS = '''
"""Test factories."""
import torch
from torch import nn


def bn_net(input_shape, n_outputs, hidden=8):
    """Linear, batch norm, dropout; linear, layer norm, alpha dropout; a head.

    More words here.
    """
    n = input_shape[0]
    return nn.Sequential(nn.Linear(n, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.AlphaDropout(0.5),
                         nn.Linear(hidden, n_outputs))


def plain(input_shape, n_outputs):
    """No dropout at all."""
    return nn.Linear(input_shape[0], n_outputs)


def raises(input_shape, n_outputs):
    raise ValueError("this factory cannot build for these inputs")


def not_a_module(input_shape, n_outputs):
    return 42


def wrong_shape(input_shape, n_outputs):
    return nn.Linear(input_shape[0], n_outputs + 1)
'''

EVIL = '''
from pathlib import Path
Path({marker!r}).write_text("imported")


def build(input_shape, n_outputs):
    raise AssertionError("never called")
'''


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "nets.py").write_text(NETS)
    monkeypatch.setenv("REGTUNE_MODELS_DIR", str(folder))
    return folder


def module_spec(tiny: Tiny, factory: str, **over: Any) -> dict[str, Any]:
    return tiny(model={"kind": "module", "factory": factory, "hidden": None}, **over)


def test_the_factories_on_offer_are_listed_with_their_docstrings_first_line(models_dir: Path) -> None:
    listed = {f.name: f.doc for f in list_factories() if f.source == "file"}
    assert listed["nets:bn_net"] == "Linear, batch norm, dropout; linear, layer norm, alpha dropout; a head."
    assert listed["nets:plain"] == "No dropout at all."
    assert set(listed) == {"nets:bn_net", "nets:plain", "nets:raises", "nets:not_a_module", "nets:wrong_shape"}


@pytest.mark.parametrize("name", [
    "evil:build",                      # a file beside the models folder, not in it
    "../outside/evil:build",           # a path out of the folder
    "outside.evil:build",              # a dotted module path (the outside folder is on sys.path)
    "outside/evil:build",
    "os:system",                       # an installed module
    "tuner.job:run_job",
    "link:build",                      # a link in the folder to the file outside it
])
def test_a_factory_outside_the_folder_and_the_entry_points_is_refused_and_never_imported(
        tiny: Tiny, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    marker = tmp_path / "imported.txt"
    outside = tmp_path / "outside"
    outside.mkdir()
    for where in (outside, tmp_path):
        (where / "evil.py").write_text(EVIL.format(marker=str(marker)))
    (outside / "__init__.py").write_text("")
    (models_dir / "link.py").symlink_to(outside / "evil.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(outside))
    with pytest.raises(SpecError) as info:
        parse_spec(module_spec(tiny, name))
    [issue] = info.value.issues
    assert issue.field == "model.factory"
    assert "nets:bn_net" in issue.message and "nets:plain" in issue.message  # the factories that exist
    assert not marker.exists()


def test_regtune_run_refuses_a_factory_outside_the_folder_with_exit_2(
        tiny: Tiny, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(module_spec(tiny, "os:system")))
    assert regtune(["run", str(spec), "--storage", f"sqlite:///{tmp_path / 'r.db'}", "--quiet",
                    "--out", str(tmp_path / "out")]) == 2
    assert "model.factory" in capsys.readouterr().err


@pytest.mark.parametrize(("factory", "reason"), [
    ("nets:raises", "raised ValueError: this factory cannot build for these inputs"),
    ("nets:not_a_module", "must return a torch.nn.Module, but returned int"),
    ("nets:wrong_shape", "to outputs of shape (8, 2)"),
])
def test_a_bad_factory_fails_the_job_before_its_first_stage(
        tiny: Tiny, models_dir: Path, tmp_path: Path, factory: str, reason: str) -> None:
    spec = parse_spec(module_spec(tiny, factory, search={"space": {"dropout": None},
                                                          "stages": [{"name": "l2", "params": ["l2"], "trials": 1}]}))
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    with pytest.raises(SpecError) as info:
        run_job(spec, storage=storage)
    [issue] = info.value.issues
    assert issue.field == "model.factory" and reason in issue.message
    assert optuna.study.get_all_study_names(storage) == []  # no stage began, no trial failed


def test_a_dropout_knob_on_a_model_without_dropout_is_refused(tiny: Tiny, models_dir: Path, tmp_path: Path) -> None:
    spec = parse_spec(module_spec(tiny, "nets:plain"))
    with pytest.raises(SpecError) as info:
        run_job(spec, storage=f"sqlite:///{tmp_path / 'r.db'}")
    [issue] = info.value.issues
    assert issue.field == "search.space.dropout" and "has no dropout module" in issue.message


@pytest.mark.parametrize(("over", "field"), [
    ({"model": {"kind": "module"}}, "model.factory"),
    ({"model": {"kind": "module", "factory": "nets:bn_net", "hidden": [4]}}, "model.hidden"),
    ({"model": {"kind": "mlp", "factory": "nets:bn_net"}}, "model.factory"),
])
def test_module_fields_belong_to_kind_module(tiny: Tiny, models_dir: Path, over: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(tiny(**over))
    assert [i.field for i in info.value.issues] == [field]


def _run(spec_dict: dict[str, Any], tmp_path: Path) -> tuple[Any, dict[str, Any], Path]:
    spec = parse_spec(spec_dict)
    out = tmp_path / "out"
    report = run_job(spec, storage=f"sqlite:///{tmp_path / 'r.db'}", out_dir=out).model_dump(mode="json")
    return spec, report, out


@pytest.mark.parametrize("kind", ["module", "mlp"])
def test_the_exported_model_reproduces_the_reports_test_loss(
        tiny: Tiny, models_dir: Path, tmp_path: Path, kind: str) -> None:
    over: dict[str, Any] = {"search": {"space": {"dropout": {"low": 0.0, "high": 0.5, "per_layer": True}}}}
    spec_dict = module_spec(tiny, "nets:bn_net", **over) if kind == "module" else tiny(
        model={"hidden": [8], "batch_norm": True}, **over)
    spec, report, out = _run(spec_dict, tmp_path)
    model = load_model(out)
    assert not model.training
    data = load_dataset(spec.dataset, spec.seed)
    assert data.test is not None
    test_loss, test_acc = evaluate(model, data.test, data.task)
    assert abs(test_loss - report["chosen"]["test_loss"]) <= 1e-5
    assert test_acc == report["chosen"]["test_acc"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["input_shape"] == [30] and meta["n_outputs"] == 2 and meta["classes"] == [0, 1]
    assert meta["params"] == report["chosen"]["params"] | {k: 0.0 for k in meta["params"]
                                                          if k not in report["chosen"]["params"]}
    assert len(meta["feature_scaling"]["mean"]) == 30


def test_per_layer_knobs_are_reported_with_their_module_names(tiny: Tiny, models_dir: Path, tmp_path: Path) -> None:
    spec_dict = module_spec(tiny, "nets:bn_net", search={
        "space": {"l2": None, "dropout": {"low": 0.1, "high": 0.5, "per_layer": True}},
        "stages": [{"name": "dropout", "params": ["dropout"], "trials": 2}]})
    _, report, out = _run(spec_dict, tmp_path)
    assert report["dropout_layers"] == {"dropout_0": "3", "dropout_1": "7"}  # Dropout, then AlphaDropout
    assert set(report["stages"][-1]["best_params"]) == {"dropout_0", "dropout_1"}
    meta = json.loads((out / "model.json").read_text())
    chosen = report["chosen"]["params"]
    assert meta["dropout_layers"] == {"3": chosen.get("dropout_0", 0.0), "7": chosen.get("dropout_1", 0.0)}
    model = load_model(out)
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout | torch.nn.AlphaDropout)] == list(
        meta["dropout_layers"].values())
    assert "dropout_1 (7)" in (out / "report.md").read_text()


def test_a_module_spec_survives_its_own_dump(tiny: Tiny, models_dir: Path) -> None:
    """The service stores ``model_dump``, and the Ray backend ships it: it must parse again, unchanged."""
    spec = parse_spec(module_spec(tiny, "nets:bn_net") | {"model": {"kind": "module", "factory": "nets:bn_net",
                                                                    "args": {"hidden": 4}}})
    again = parse_spec(spec.model_dump(mode="json"))
    assert again == spec and again.model.args == {"hidden": 4}


def test_regtune_models_lists_name_and_docstring(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert regtune(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["nets:plain", "No", "dropout", "at", "all."] for line in lines), lines


def test_the_example_plugin_and_its_spec_are_on_offer(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = Path(__file__).resolve().parents[3] / "examples" / "models"
    monkeypatch.setenv("REGTUNE_MODELS_DIR", str(examples))
    spec = load_spec(examples / "digits-resnet.yaml")
    assert spec.model.factory == "digits_models:resnet"
    net = load_factory("digits_models:resnet")((64,), 10, channels=4, blocks=1)
    assert net(torch.zeros(2, 64)).shape == (2, 10)
    kinds = [type(m).__name__ for m in net.modules()]
    assert kinds.count("BatchNorm2d") == 3 and "Dropout2d" in kinds and "Dropout" in kinds
