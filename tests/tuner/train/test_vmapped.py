"""Plug-ins and the CNN batched through torch.func: each member as alone, its own masks, a fallback that says why."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from _same import assert_same
from optuna.trial import TrialState

from tuner import parse_spec, run_job
from tuner.backends import trials_per_batch
from tuner.knobs import Knobs
from tuner.train import TrainResult, load_dataset, train, train_vmapped, vmap_blocker

Tiny = Callable[..., dict[str, Any]]

NETS = '''
import math

from torch import nn


def mlp(input_shape, n_outputs):
    """Flatten, a hidden layer with dropout, a head."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 8), nn.ReLU(), nn.Dropout(),
                         nn.Linear(8, n_outputs))


def conv(input_shape, n_outputs):
    """A conv with spatial dropout, pooling, a head with dropout."""
    return nn.Sequential(nn.Conv2d(input_shape[0], 3, 3, padding=1), nn.ReLU(), nn.Dropout2d(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(), nn.Linear(3 * (input_shape[1] // 2) ** 2, n_outputs))


def batch_norm(input_shape, n_outputs):
    """Batch norm keeps running statistics: buffers its forward changes in place (each member's own)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 8), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Dropout(), nn.Linear(8, n_outputs))


def batch_stats_only(input_shape, n_outputs):
    """Batch norm without running statistics: nothing changes in place."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 8),
                         nn.BatchNorm1d(8, track_running_stats=False), nn.ReLU(), nn.Dropout(),
                         nn.Linear(8, n_outputs))


class Branches(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.hidden, self.drop, self.head = nn.Linear(n_in, 8), nn.Dropout(), nn.Linear(8, n_out)

    def forward(self, x):
        h = self.drop(self.hidden(x.flatten(1)))
        return self.head(h.relu() if float(h.detach().mean()) > 0 else h.tanh())


def branches(input_shape, n_outputs):
    """Picks its activation by the value of its hidden layer: control flow that depends on the data."""
    return Branches(math.prod(input_shape), n_outputs)
'''

CASES = {  # model, dataset, optimizer: every optimizer, both tasks, a plug-in of each shape and the cnn
    "plugin-mlp-classification": ({"kind": "module", "factory": "nets:mlp"}, "img.npz", "adam"),
    "plugin-mlp-regression": ({"kind": "module", "factory": "nets:mlp"}, "diabetes", "sgd"),
    "plugin-conv": ({"kind": "module", "factory": "nets:conv"}, "img.npz", "sgd"),
    # sgd: a bias before batch norm has a gradient of rounding noise alone, which Adam's step would scale up
    "plugin-batch-norm": ({"kind": "module", "factory": "nets:batch_norm"}, "img.npz", "sgd"),
    "cnn": ({"kind": "cnn", "channels": [3], "kernel": 3, "hidden": [6]}, "img.npz", "adamw"),
    "cnn-batch-norm": ({"kind": "cnn", "channels": [3], "kernel": 3, "hidden": [6], "batch_norm": True}, "img.npz",
                       "sgd"),
}


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plug-ins above in REGTUNE_MODELS_DIR; 80 1x6x6 images of two classes, folds set, in REGTUNE_DATA_DIR."""
    (tmp_path / "nets.py").write_text(NETS)
    rng = np.random.default_rng(0)
    y = np.arange(80) % 2
    X = rng.normal(size=(80, 1, 6, 6)).astype(np.float32)
    X[:, :, 2:4, 2:4] += np.where(y == 1, 1.0, -1.0)[:, None, None, None]
    np.savez(tmp_path / "img.npz", X=X, y=y, fold=np.array(["train"] * 48 + ["val"] * 24 + ["test"] * 8))
    monkeypatch.setenv("REGTUNE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    return tmp_path


def _setup(model: dict[str, Any], dataset: str, optimizer: str = "adam", patience: int | None = 1) -> Any:
    source = ({"source": "npz", "path": dataset} if dataset.endswith(".npz")
              else {"source": "sklearn", "name": dataset, "split": {"val": 0.3, "test": 0.4}})
    spec = parse_spec({
        "name": "v", "dataset": source, "model": model,
        "training": {"epochs": 3, "batch_size": 16, "lr": 0.05, "optimizer": optimizer,
                     "early_stopping": {"patience": patience} if patience else None},
        "search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}}},
    })
    data = load_dataset(spec.dataset, spec.seed).without_test()
    if spec.model.kind == "module":  # the job fills the dropout modules in: the knobs' numbering
        names = {"nets:mlp": ["3"], "nets:conv": ["2", "5"], "nets:batch_norm": ["4"]}.get(spec.model.factory or "")
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"dropout_layers": names})})
    return spec, data


@pytest.mark.parametrize("case", list(CASES))
def test_with_dropout_off_each_member_trains_as_it_would_alone(folders: Path, case: str) -> None:
    spec, data = _setup(*CASES[case])
    _with_dropout_off_each_member_trains_as_it_would_alone(spec, data, train_curve=True)


def test_without_train_curves_each_member_keeps_the_train_loss_it_would_keep_alone(folders: Path) -> None:
    spec, data = _setup(*CASES["cnn"])
    _with_dropout_off_each_member_trains_as_it_would_alone(spec, data, train_curve=False)


def _with_dropout_off_each_member_trains_as_it_would_alone(spec: Any, data: Any, train_curve: bool) -> None:
    off = (0.0,) * spec.model.dropout_slots
    smooth = 0.1 if data.task == "classification" else 0.0
    knobs = [Knobs(dropout=off), Knobs(l1=0.1, l2=1e-2, dropout=off, label_smoothing=smooth),
             Knobs(l1=3e-2, dropout=off)]
    alone = [train(data, spec.model, spec.training, k, spec.seed) for k in knobs[:2]]
    ended: list[int] = []

    def prune_first_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    batched = train_vmapped(data, spec.model, spec.training, knobs, spec.seed, [None, None, prune_first_epoch],
                            on_end=lambda k, _: ended.append(k), train_curve=train_curve)
    for a, b in zip(alone, batched[:2], strict=True):
        if not train_curve:  # measured once, from the weights kept
            assert isinstance(b, TrainResult) and b.curve_train == []
            b = replace(b, curve_train=a.curve_train)
        assert_same(a, b, features=False)
    assert isinstance(batched[2], optuna.TrialPruned) and ended[0] == 2  # it left first; the others trained on
    assert any(a.sparsity > 0 for a in alone), "some member should have exact zeros (L1)"


def test_each_member_draws_its_own_dropout_masks(folders: Path) -> None:
    spec, data = _setup(*CASES["plugin-conv"], patience=None)
    rates = [(0.0, 0.0), (0.3, 0.3), (0.3, 0.3), (0.6, 0.1)]
    seen: dict[int, list[float]] = {k: [] for k in range(len(rates))}

    def record(k: int) -> Callable[[int, float, float], None]:
        return lambda epoch, train_loss, val_loss: seen[k].append(val_loss)

    outcomes = train_vmapped(data, spec.model, spec.training, [Knobs(dropout=r, input_dropout=r[1]) for r in rates],
                             spec.seed, [record(k) for k in range(len(rates))])
    results = [o for o in outcomes if isinstance(o, TrainResult)]
    assert len(results) == len(rates)
    for k, r in enumerate(results):
        assert r.curve_val == seen[k] and all(math.isfinite(v) for v in r.curve_train + r.curve_val)
    curves = [tuple(r.curve_val) for r in results]
    assert len(set(curves)) == len(rates), "equal rates, different masks: every member's curve is its own"
    # the member that drops nothing keeps every unit, beside members that drop: it trains as alone
    alone = train(data, spec.model, spec.training, Knobs(dropout=(0.0, 0.0)), spec.seed)
    assert_same(alone, outcomes[0], features=False)


@pytest.mark.parametrize(("factory", "says"), [
    ("nets:mlp", None),
    ("nets:batch_stats_only", None),
    ("nets:batch_norm", None),
    ("nets:branches", "calling .item()"),
])
def test_the_probe_says_which_modules_vmap_cannot_run(folders: Path, factory: str, says: str | None) -> None:
    spec, data = _setup({"kind": "module", "factory": factory}, "img.npz")
    why = vmap_blocker(spec.model, data)
    assert why is None if says is None else (why is not None and says in why), why


@pytest.mark.parametrize(("factory", "batched"), [("nets:mlp", True), ("nets:branches", False)])
def test_a_stage_of_plugin_trials_batches_or_says_why_it_cannot(
        tiny: Tiny, folders: Path, caplog: pytest.LogCaptureFixture, factory: str, batched: bool) -> None:
    spec = parse_spec(tiny(
        dataset={"source": "npz", "path": "img.npz", "name": None, "split": None},
        model={"kind": "module", "factory": factory, "hidden": None}, training={"epochs": 2},
        search={"batch": 3, "space": {"dropout": None}, "stages": [{"name": "l2", "params": ["l2"], "trials": 3}]},
        report={"top_k": 1, "seeds": 0}))
    storage = f"sqlite:///{folders / 'r.db'}"
    with caplog.at_level(logging.WARNING, logger="tuner.backends._batches"):
        run_job(spec, storage=storage)
    study = optuna.load_study(study_name="tiny/l2", storage=storage)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 3
    assert study.user_attrs["batched"] is batched and study.user_attrs["batch_size"] == (3 if batched else 1)
    said = [r.getMessage() for r in caplog.records if "not batched" in r.getMessage()]
    if batched:
        assert "batched_reason" not in study.user_attrs and not said
    else:
        assert "calling .item()" in study.user_attrs["batched_reason"]
        assert len(said) == 2 and all("calling .item()" in line for line in said)  # one line per stage
        assert "stage baseline" in said[0] and "stage l2" in said[1]


@pytest.mark.parametrize(("factory", "batch", "per_batch"),
                         [("nets:mlp", 3, 3), ("nets:branches", 3, 1), ("nets:mlp", "auto", 1)])
def test_a_plugin_batches_where_vmap_can_run_it_and_auto_trains_it_alone(
        tiny: Tiny, folders: Path, factory: str, batch: int | str, per_batch: int) -> None:
    # auto trains a module one at a time: through vmap its dropout masks are not its lone run's
    spec = parse_spec(tiny(dataset={"source": "npz", "path": "img.npz", "name": None, "split": None},
                           model={"kind": "module", "factory": factory, "hidden": None}, search={"batch": batch}))
    data = load_dataset(spec.dataset, spec.seed).without_test()
    assert trials_per_batch(spec, data, 12) == per_batch
