"""L1/L2 act on weights only, proximal L1 gives exact zeros, dropout is off in eval, smoothing only in training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from tuner import parse_spec
from tuner.knobs import Knobs
from tuner.train import MLP, evaluate, l2_penalty, load_dataset, prox_l1_, sparsity, train
from tuner.train._models import dropout_uniforms, inverted_dropout

Tiny = Callable[..., dict[str, Any]]


LINEAR: dict[str, Any] = {
    "model": {"kind": "linear", "hidden": None},
    "search": {"space": {"dropout": None}, "stages": [{"name": "l2", "params": ["l2"], "trials": 1}]},
}


def _setup(tiny: Tiny, **over: Any) -> tuple[Any, Any]:
    spec = parse_spec(tiny(**over))
    return spec, load_dataset(spec.dataset, spec.seed).without_test()


def test_l2_penalty_reads_weights_only() -> None:
    model = MLP(4, [3], 2)
    with torch.no_grad():
        for lin in model.linears:
            lin.weight.zero_()
            lin.bias.fill_(5.0)
    assert float(l2_penalty([lin.weight.detach() for lin in model.linears], 1.0)) == 0.0


def test_strong_l1_zeroes_every_weight_and_leaves_biases(tiny: Tiny) -> None:
    spec, data = _setup(tiny, **LINEAR)
    result = train(data, spec.model, spec.training, Knobs(l1=10.0), seed=0)
    assert result.model is not None
    assert result.sparsity == 1.0
    assert result.features_kept == 0
    assert float(result.model.out.bias.detach().abs().sum()) > 0.0  # the bias still fits the class prior


def test_strong_l2_shrinks_weights_but_not_biases(tiny: Tiny) -> None:
    spec, data = _setup(tiny, **LINEAR)
    plain = train(data, spec.model, spec.training, Knobs(), seed=0)
    shrunk = train(data, spec.model, spec.training, Knobs(l2=10.0), seed=0)
    assert plain.model is not None and shrunk.model is not None
    w_plain, w_shrunk = plain.model.out.weight.detach().norm(), shrunk.model.out.weight.detach().norm()
    assert float(w_shrunk) < 0.2 * float(w_plain)
    # λ₂ on the bias would pull it to 0 as well; with a class imbalance of 37/63 it must stay away from 0
    assert float((shrunk.model.out.bias[1] - shrunk.model.out.bias[0]).detach().abs()) > 0.1


def test_proximal_l1_gives_exact_zeros_plain_training_none(tiny: Tiny) -> None:
    spec, data = _setup(tiny, **LINEAR)
    plain = train(data, spec.model, spec.training, Knobs(), seed=0)
    sparse = train(data, spec.model, spec.training, Knobs(l1=0.02), seed=0)
    assert plain.sparsity == 0.0
    assert 0.0 < sparse.sparsity < 1.0
    assert sparse.features_kept < data.n_features


def test_prox_step_soft_thresholds_by_the_sgd_step() -> None:
    w = torch.nn.Parameter(torch.tensor([0.5, -0.05, 0.02, -1.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    prox_l1_([w], lam=0.5, optimizer=opt)  # threshold lr·λ = 0.05
    assert w.detach().tolist() == torch.tensor([0.45, 0.0, 0.0, -0.95]).tolist()
    assert sparsity([w]) == 0.5


def test_dropout_only_in_training_mode() -> None:
    torch.manual_seed(0)
    model = MLP(8, [32, 32], 3)
    x = torch.randn(16, 8)
    model.eval()
    assert torch.equal(model(x, dropout=(0.5, 0.5), input_dropout=0.3), model(x))
    model.train()
    assert not torch.equal(model(x, dropout=(0.5, 0.5), input_dropout=0.3), model(x))


def test_inverted_dropout_keeps_the_expectation() -> None:
    x = torch.ones(200_000)
    out = inverted_dropout(x, 0.4, torch.Generator().manual_seed(0))
    assert abs(float((out == 0).float().mean()) - 0.4) < 0.01
    assert abs(float(out.mean()) - 1.0) < 0.01


def test_dropout_uniforms_cover_the_16_bit_grid_evenly_and_repeat_with_the_generator() -> None:
    u = dropout_uniforms((500, 400), torch.Generator().manual_seed(3))
    assert u.shape == (500, 400) and u.dtype == torch.float32
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    grid = u * 2**16
    assert torch.equal(grid, grid.round())  # steps of 2^-16: u >= p keeps a unit with probability 1 - p, to 1.5e-5
    counts = torch.histc(u, bins=10, min=0.0, max=1.0) / u.numel()
    assert float((counts - 0.1).abs().max()) < 0.005
    assert torch.equal(u, dropout_uniforms((500, 400), torch.Generator().manual_seed(3)))
    odd = dropout_uniforms((3, 7), torch.Generator().manual_seed(3))  # 21 values: the last draw is partly used
    assert torch.equal(odd.flatten(), u.flatten()[:21])


def test_label_smoothing_changes_only_the_training_loss(tiny: Tiny) -> None:
    spec, data = _setup(tiny)
    result = train(data, spec.model, spec.training, Knobs(dropout=(0.0,), label_smoothing=0.3), seed=0)
    assert result.model is not None
    result.model.eval()
    with torch.no_grad():
        logits = result.model(data.val.X)
    plain = float(F.cross_entropy(logits, data.val.y))
    smoothed = float(F.cross_entropy(logits, data.val.y, label_smoothing=0.3))
    assert abs(result.val_loss - plain) < 1e-6  # the reported val loss is the plain one
    assert abs(plain - smoothed) > 1e-3
    assert evaluate(result.model, data.val, data.task)[0] == result.val_loss


def test_nan_loss_fails_the_trial(tiny: Tiny) -> None:
    import pytest

    from tuner.errors import TrialFailed

    spec, data = _setup(tiny, training={"optimizer": "sgd", "lr": 1.0})
    with pytest.raises(TrialFailed, match="loss"):
        train(data, spec.model, spec.training, Knobs(l2=1e6, dropout=(0.0,)), seed=0)
