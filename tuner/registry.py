"""Everything a spec chooses by name, one registry per kind: the one list of its names.

The spec accepts exactly a registry's names and the code that builds the thing
loads it from the same registry, so adding a sampler, a pruner, a backend, an
activation, an optimizer or a model kind is one line here (and its factory
where things of its kind are built). Each name points at ``"module:attribute"``
and is imported only when loaded (Ray Tune's registries work so): the spec reads
the names without loading torch, Optuna or Ray.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from torch import nn, optim

    from tuner.knobs import Knobs
    from tuner.search import StageRun
    from tuner.spec import TrainingSpec
    from tuner.train import Dataset

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "MODEL_KINDS",
    "OPTIMIZERS",
    "PRUNERS",
    "SAMPLERS",
    "Registry",
    "StageExecutor",
    "check_name",
]

T = TypeVar("T")


def check_name(value: str, valid: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``valid``; else a ValueError that lists every valid name."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid {what}s are: {', '.join(valid)}")
    return value


class Registry(Generic[T]):
    """Names, in order, each with where its factory lives; the factory is imported on ``load``.

    Args:
        what: what a name names ("sampler"), for the message an unknown name gets.
        entries: name → ``"module:attribute"``.
    """

    def __init__(self, what: str, entries: Mapping[str, str]) -> None:
        self.what = what
        self._entries = dict(entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, name: str) -> T:
        """The factory called ``name``.

        Raises:
            ValueError: an unknown name (the message lists every valid one).
        """
        module, _, attribute = self._entries[check_name(name, self.names, self.what)].partition(":")
        factory: T = getattr(importlib.import_module(module), attribute)
        return factory


SamplerFactory = Callable[[int, bool, "Mapping[str, Sequence[Any]] | None", bool], "BaseSampler"]
"""(seed, multi-objective, the stage's grid or None, constant liar) → an Optuna sampler.

Constant liar: trials asked together (a batch) are spread out instead of proposed alike (TPE only)."""

SAMPLERS: Registry[SamplerFactory] = Registry("sampler", {
    "grid": "tuner.search._samplers:grid_sampler",
    "random": "tuner.search._samplers:random_sampler",
    "tpe": "tuner.search._samplers:tpe_sampler",
    "gp": "tuner.search._samplers:gp_sampler",
    "cmaes": "tuner.search._samplers:cmaes_sampler",
    "qmc": "tuner.search._samplers:qmc_sampler",
    "nsga2": "tuner.search._samplers:nsga2_sampler",
})

PRUNERS: Registry[Callable[[], BasePruner]] = Registry("pruner", {
    "none": "optuna.pruners:NopPruner",
    "median": "tuner.search._samplers:median_pruner",
    "hyperband": "tuner.search._samplers:hyperband_pruner",
})

StageExecutor = Callable[[Iterator["StageRun"], "Dataset", str], Callable[[], object] | None]
"""Runs a job's stages in order, given the stages (an iterator of stage runs), the search data and the storage
URL. It takes the next stage from the iterator only once every trial of the one before is told: taking it
closes that stage (and raises what closing it raises, ``Cancelled`` or ``RegtuneError``). It may return work
for after the job, which ``run_job`` calls once the report is written (the Ray backend: starting the workers
the next job takes)."""

BACKENDS: Registry[StageExecutor] = Registry("backend", {
    "optuna": "tuner.backends._threads:run_stages",
    "ray": "tuner.backends.ray:run_ray",  # Ray is heavy: imported only when a job asks for it
})

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation", {
    "relu": "torch.nn:ReLU",
    "tanh": "torch.nn:Tanh",
    "gelu": "torch.nn:GELU",
    "silu": "torch.nn:SiLU",
    "elu": "torch.nn:ELU",
    "leaky_relu": "torch.nn:LeakyReLU",
})

OPTIMIZERS: Registry[Callable[[nn.Module, TrainingSpec, Knobs], optim.Optimizer]] = Registry("optimizer", {
    "adam": "tuner.train._loop:adam",
    "adamw": "tuner.train._loop:adamw",
    "sgd": "tuner.train._loop:sgd",
})

MODEL_KINDS: Registry[Callable[..., nn.Module]] = Registry("model kind", {
    # the built-in MLP: (model spec, inputs, outputs) → MLP
    "mlp": "tuner.train._models:build_mlp",
    "linear": "tuner.train._models:build_mlp",  # an MLP with no hidden layers (the spec leaves none)
    # a plug-in module: (model spec, input shape, outputs, seed) → the module (the cnn is one built in)
    "cnn": "tuner.train._module:make_plugin",
    "module": "tuner.train._module:make_plugin",
})
