"""Any module under the knobs: L1/L2 on weights only (never biases or norm parameters), dropout p on every module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tuner import parse_spec
from tuner.knobs import Knobs
from tuner.train import PluginModel, decay_weights, dropout_modules, load_dataset, train

Tiny = Callable[..., dict[str, Any]]


class ConvNet(nn.Module):
    """Conv with batch norm, spatial dropout, an embedding-like table, attention, layer norm, dropouts."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout2d())
        self.embed = nn.Embedding(5, 4)
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)
        self.norm = nn.LayerNorm(4)
        self.drops = nn.ModuleList([nn.Dropout(), nn.Dropout1d(), nn.Dropout3d(), nn.AlphaDropout(),
                                    nn.FeatureAlphaDropout()])
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.reshape(-1, 1, 2, 2)).mean(dim=(2, 3))  # (N, 4)
        h = h + self.embed.weight.sum(0)
        a, _ = self.attn(h[:, None, :], h[:, None, :], h[:, None, :])
        h = self.norm(a[:, 0])
        h = self.drops[0](h)
        h = self.drops[1](h[:, :, None])[:, :, 0]
        h = self.drops[2](h[:, :, None, None, None])[:, :, 0, 0, 0]
        h = self.drops[4](self.drops[3](h)[:, :, None])[:, :, 0]
        out: torch.Tensor = self.head(h)
        return out


def test_l1_and_l2_act_on_every_weight_matrix_and_never_on_biases_or_norm_parameters() -> None:
    net = ConvNet()
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[id(w)] for w in decay_weights(net)) == sorted([
        "features.0.weight", "embed.weight", "attn.in_proj_weight", "attn.out_proj.weight", "head.weight"])


def test_per_layer_dropout_is_numbered_in_named_modules_order() -> None:
    assert [n for n, _ in dropout_modules(ConvNet())] == [
        "features.3", "drops.0", "drops.1", "drops.2", "drops.3", "drops.4"]


def test_every_dropout_module_gets_its_rate_and_is_off_in_eval() -> None:
    torch.manual_seed(0)
    model = PluginModel(ConvNet())
    x = torch.randn(16, 4)
    rates = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    model.train()
    model(x, rates)
    assert [m.p for _, m in dropout_modules(model.net)] == list(rates)
    model.train()
    model(x, (0.3,) * 6)
    assert {m.p for _, m in dropout_modules(model.net)} == {0.3}
    model.eval()
    first, second = model(x), model(x)
    assert torch.equal(first, second)  # no unit dropped in eval
    model.net.eval()
    assert torch.equal(first, model.net(x))


BN_NET = """
from torch import nn


def bn_net(input_shape, n_outputs):
    \"\"\"Linear, batch norm, linear, layer norm, a head; dropout after each norm.\"\"\"
    return nn.Sequential(nn.Linear(input_shape[0], 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(),
                         nn.Linear(8, 8), nn.LayerNorm(8), nn.ReLU(), nn.Dropout(), nn.Linear(8, n_outputs))
"""


def _plugin_run(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, knobs: Knobs,
                **training: Any) -> nn.Module:
    (tmp_path / "bn.py").write_text(BN_NET)
    monkeypatch.setenv("REGTUNE_MODELS_DIR", str(tmp_path))
    spec = parse_spec(tiny(model={"kind": "module", "factory": "bn:bn_net", "hidden": None},
                           training={"optimizer": "sgd", **training}))
    spec.model.dropout_layers = ["3", "7"]
    data = load_dataset(spec.dataset, spec.seed).without_test()
    result = train(data, spec.model, spec.training, knobs, 0)
    assert isinstance(result.model, PluginModel)
    return result.model.net


def test_with_batch_norm_biases_and_norm_parameters_are_untouched_by_l1(
        tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A huge λ₁ zeroes every weight matrix of a plug-in; its biases and norm parameters stay non-zero."""
    net = _plugin_run(tiny, tmp_path, monkeypatch, Knobs(l1=1e3))
    for name, p in net.named_parameters():
        is_matrix = name.endswith("weight") and p.dim() >= 2
        assert bool((p == 0).all()) if is_matrix else bool((p != 0).any()), name


def test_with_batch_norm_biases_and_norm_parameters_are_untouched_by_l2(
        tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One SGD step from the same start, with and without λ₂: only the weight matrices move differently."""
    one_step = {"epochs": 1, "batch_size": 10_000}
    off = dict(_plugin_run(tiny, tmp_path, monkeypatch, Knobs(), **one_step).named_parameters())
    on = dict(_plugin_run(tiny, tmp_path, monkeypatch, Knobs(l2=1.0), **one_step).named_parameters())
    differ = sorted(n for n in off if not torch.equal(off[n], on[n]))
    assert differ == ["0.weight", "4.weight", "8.weight"]
