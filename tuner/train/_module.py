"""Any torch module under regtune's knobs: plug-in models from a factory, and the parts of a module knobs act on.

L1 and L2 act on every parameter whose name ends in ``weight`` and has two or
more dimensions (Linear, Conv*, attention projections, Embedding), never on
biases or normalization layers' parameters. The dropout knob sets ``p`` on
every dropout module, one rate for all or one per module in ``named_modules()``
order. A plug-in is checked against the data once, before the first stage:
built, and run on one batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from tuner.errors import SpecError
from tuner.plugins import load_factory
from tuner.spec import JobSpec, ModelSpec
from tuner.train._cnn import CNN
from tuner.train._data import Dataset
from tuner.train._models import MLP, build_model, inverted_dropout

__all__ = ["DROPOUT_TYPES", "PluginModel", "build_any", "check_model", "decay_weights", "dropout_modules",
           "has_batch_norm", "make_plugin"]

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_NORMS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
_init_lock = threading.Lock()  # a factory draws its initial weights from torch's global generator


def decay_weights(model: nn.Module) -> list[nn.Parameter]:
    """The parameters L1 and L2 act on, in ``named_modules()`` order (for an MLP: its linear layers, input first)."""
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORMS):
            continue
        for name, param in module.named_parameters(recurse=False):
            if name.endswith("weight") and param.dim() >= 2 and id(param) not in seen:
                seen.add(id(param))
                out.append(param)
    return out


def dropout_modules(model: nn.Module) -> list[tuple[str, _DropoutNd]]:
    """Every dropout module with its name, in ``named_modules()`` order: the per-layer knobs' numbering."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, DROPOUT_TYPES)
            and isinstance(m, _DropoutNd)]


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class PluginModel(nn.Module):
    """A factory's module with the trainer's calling convention: ``forward(x, dropout, input_dropout, generator)``.

    The rates are set as ``p`` on the module's own dropout modules (torch's dropout then draws
    from the global generator); ``net`` is the user's module, exported as it is.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.drops = [m for _, m in dropout_modules(net)]

    def set_dropout(self, rates: Sequence[float]) -> None:
        """One rate per dropout module, or none (every rate 0: the baseline)."""
        if rates and len(rates) != len(self.drops):
            raise ValueError(f"the model has {len(self.drops)} dropout modules, but got {len(rates)} rates")
        for m, p in zip(self.drops, rates or [0.0] * len(self.drops), strict=True):
            m.p = float(p)

    def forward(self, x: torch.Tensor, dropout: Sequence[float] = (), input_dropout: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if self.training:
            self.set_dropout(dropout)
            x = inverted_dropout(x, input_dropout, generator)
        out: torch.Tensor = self.net(x)
        return out


def make_plugin(spec: ModelSpec, input_shape: tuple[int, ...], n_out: int, seed: int) -> nn.Module:
    """Call the spec's factory (or build the CNN) with torch's global generator seeded, so equal seeds give
    equal initial weights.

    Raises:
        SpecError: on ``model.factory``: the factory is not on offer, raised, or returned no Module; on
            ``model.kind``: a cnn for examples that are not images.
    """
    if spec.kind == "cnn":
        if len(input_shape) != 3:
            raise SpecError.one("model.kind", f"a cnn needs image-shaped examples (C, H, W), but this dataset's "
                                f"examples have shape {tuple(input_shape)}; use an npz source with images, or "
                                "sklearn's digits_images")
        with _init_lock:
            torch.manual_seed(seed)
            return CNN(input_shape, spec.channels or [], spec.kernel or 3, spec.hidden or [], n_out,
                       spec.activation, spec.batch_norm)
    factory = load_factory(spec.factory or "")
    with _init_lock:
        torch.manual_seed(seed)
        try:
            net = factory(tuple(input_shape), n_out, **(spec.args or {}))
        except Exception as exc:
            raise SpecError.one("model.factory", f"the factory {spec.factory!r} raised {type(exc).__name__}: "
                                f"{exc} (input_shape={tuple(input_shape)}, n_outputs={n_out}, "
                                f"args={spec.args})", spec.factory) from None
    if not isinstance(net, nn.Module):
        raise SpecError.one("model.factory", f"the factory {spec.factory!r} must return a torch.nn.Module, but "
                            f"returned {type(net).__name__}", spec.factory)
    return net


def build_any(spec: ModelSpec, data: Dataset, generator: torch.Generator) -> MLP | PluginModel:
    """The model a spec describes for this data: the built-in MLP, or the factory's module wrapped."""
    if spec.kind not in ("module", "cnn"):
        return build_model(spec, data.n_features, data.n_outputs, generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return PluginModel(make_plugin(spec, data.input_shape, data.n_outputs, seed))


def check_model(spec: JobSpec, data: Dataset) -> list[str]:
    """Build the spec's plug-in once and run it on one training batch, before any stage runs.

    Returns:
        The names of its dropout modules, in ``named_modules()`` order.

    Raises:
        SpecError: the factory fails, returns no Module, its forward pass fails or gives outputs of the wrong
            shape; a dropout knob on a model with no dropout module; ``model.dropout_layers`` that do not match.
    """
    if spec.model.kind not in ("module", "cnn"):
        return []
    what = f"the model of {spec.model.factory!r}" if spec.model.kind == "module" else "the cnn"
    model = build_any(spec.model, data, torch.Generator().manual_seed(spec.seed))
    rows = min(len(data.train), max(2, min(spec.training.batch_size, 8)))
    x = data.train.X[:rows]
    model.train()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise SpecError.one("model.factory", f"{what} fails on one batch of "
                            f"shape {tuple(x.shape)}: {type(exc).__name__}: {exc}", spec.model.factory) from None
    want = (rows, data.n_outputs)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError.one("model.factory", f"{what} must map a batch of shape "
                            f"{tuple(x.shape)} to outputs of shape {want} ({data.n_outputs} outputs for this "
                            f"{data.task}), but gave {got}", spec.model.factory)
    names = [name for name, _ in dropout_modules(model.net if isinstance(model, PluginModel) else model)]
    if spec.search.space.dropout is not None and not names:
        raise SpecError.one("search.space.dropout", f"{what} has no dropout module "
                            "(nn.Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout) for the "
                            "dropout knob to set; drop 'dropout' from search.space")
    if spec.model.dropout_layers is not None and spec.model.dropout_layers != names:
        raise SpecError.one("model.dropout_layers", f"must list the model's dropout modules {names}, but got "
                            f"{spec.model.dropout_layers}", spec.model.dropout_layers)
    return names
