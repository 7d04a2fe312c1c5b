"""Torch models. A linear model is an MLP with no hidden layers.

Dropout rates are not baked into the modules: ``forward`` takes them, so one
module can be trained under any trial's knobs (and, later, K configurations
can share one stacked model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from tuner.registry import ACTIVATIONS, MODEL_KINDS
from tuner.spec import ModelSpec

__all__ = ["MLP", "build_model", "dropout_bits", "dropout_generators", "dropout_uniforms", "inverted_dropout"]


def inverted_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Zero each unit with probability ``p`` and scale the rest by 1/(1-p), so eval needs no rescaling."""
    if p <= 0.0:
        return x
    device = generator.device if generator is not None else x.device  # the trial's generator lives on the CPU
    keep = (dropout_uniforms(x.shape, generator, device) >= p).to(x.device)
    return x * keep / (1.0 - p)


def dropout_uniforms(shape: Sequence[int], generator: torch.Generator | None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniforms in [0, 1) for dropout masks, at a resolution of 2⁻¹⁶: four from each 64-bit draw.

    ``torch.rand`` spends one draw of the generator (a Mersenne Twister, which runs on one core) per
    float; a mask only asks u ≥ p, and 16 bits move a keep rate by at most 1.5e-5. Half the time
    of ``torch.rand`` for a 128 × 256 site. ``train_batched`` draws its members' masks from the same
    bits (``dropout_bits``), without this scaling.
    """
    return dropout_bits(shape, generator, device).add_(32768.0).mul_(2.0**-16)


def dropout_bits(shape: Sequence[int], generator: torch.Generator | None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The 16-bit integers b behind ``dropout_uniforms`` (u = (b + 32768)·2⁻¹⁶), as floats in [-32768, 32767].

    u ≥ p exactly when b ≥ ⌈p·2¹⁶⌉ − 32768: a comparison with these needs no scaling of its own.
    """
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None, generator=generator)
    return bits.view(torch.int16)[:n].view(tuple(shape)).float()


def dropout_generators(seed: int, n_hidden: int) -> list[torch.Generator]:
    """One random stream per dropout site: the input (site 0), then each hidden layer.

    A site draws only from its own stream, so a layer's masks depend on the seed
    and the batch shape alone, never on which other layers drop out. Trials that
    share a seed then draw the same uniforms at each site, which lets K of them
    train as one batched model (``train_batched``) with the masks each would
    draw alone.
    """
    return [torch.Generator().manual_seed((seed << 8) + 1 + site) for site in range(1 + n_hidden)]


def _site(generator: torch.Generator | Sequence[torch.Generator] | None, site: int) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return generator[site]


class MLP(nn.Module):
    """Linear layers with an activation, optional batch norm and dropout after each hidden layer."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, activation: str = "relu",
                 batch_norm: bool = False) -> None:
        super().__init__()
        sizes = [n_in, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(b) if batch_norm else nn.Identity() for b in hidden
        )
        self.act = ACTIVATIONS.load(activation)()
        self.out = nn.Linear(sizes[-1], n_out)

    @property
    def linears(self) -> list[nn.Linear]:
        """Every linear layer, input side first: the layers whose weights L1 and L2 act on."""
        return [*self.hidden, self.out]

    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default init, drawn from ``generator`` so concurrent trials stay reproducible."""
        with torch.no_grad():
            for lin in self.linears:
                bound = 1.0 / math.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=generator)
                lin.bias.uniform_(-bound, bound, generator=generator)
            for norm in self.norms:
                if isinstance(norm, nn.BatchNorm1d):
                    norm.reset_parameters()

    def forward(self, x: torch.Tensor, dropout: Sequence[float] = (), input_dropout: float = 0.0,
                generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Args:
        dropout: one rate per hidden layer (applied in training mode only).
        input_dropout: the rate on the input features (training mode only).
        generator: one stream for every mask, or one per site (see ``dropout_generators``).
        """
        x = x.flatten(1)  # image-shaped examples reach an MLP as their pixels
        if self.training:
            x = inverted_dropout(x, input_dropout, _site(generator, 0))
        for i, (lin, norm) in enumerate(zip(self.hidden, self.norms, strict=True)):
            x = self.act(norm(lin(x)))
            if self.training and i < len(dropout):
                x = inverted_dropout(x, dropout[i], _site(generator, i + 1))
        out: torch.Tensor = self.out(x)
        return out


def build_mlp(spec: ModelSpec, n_in: int, n_out: int) -> MLP:
    """The ``mlp`` and ``linear`` kinds (``tuner.registry.MODEL_KINDS``): the linear one has no hidden layers."""
    return MLP(n_in, spec.hidden or [], n_out, spec.activation, spec.batch_norm)


def build_model(spec: ModelSpec, n_in: int, n_out: int, generator: torch.Generator) -> MLP:
    """The model a spec describes, initialized from ``generator``."""
    model = MODEL_KINDS.load(spec.kind)(spec, n_in, n_out)
    assert isinstance(model, MLP), f"kind {spec.kind!r} is a plug-in: build it with build_any"
    model.reset_parameters(generator)
    return model
