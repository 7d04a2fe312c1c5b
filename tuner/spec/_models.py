"""The parts of a job spec: model, training, search and its stages, report.

The dataset part and the knob priors have modules of their own. Field names follow DESIGN.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from tuner.spec._base import Strict, check_one_of, field_error, one_of
from tuner.spec._priors import Space

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "METRICS",
    "MODEL_KINDS",
    "OPTIMIZERS",
    "PRUNERS",
    "SAMPLERS",
    "EarlyStopping",
    "ModelSpec",
    "ReportSpec",
    "SearchSpec",
    "StageSpec",
    "TrainingSpec",
]

MODEL_KINDS = ("mlp", "linear", "cnn", "module")
ACTIVATIONS = ("relu", "tanh", "gelu", "silu", "elu", "leaky_relu")
OPTIMIZERS = ("adam", "adamw", "sgd")
SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "qmc", "nsga2")
PRUNERS = ("none", "median", "hyperband")
METRICS = ("val_loss", "val_error", "gap")
BACKENDS = ("optuna", "ray")


class ModelSpec(Strict):
    kind: Annotated[str, one_of(MODEL_KINDS, "model kind")] = "mlp"
    hidden: list[int] | None = None
    activation: Annotated[str, one_of(ACTIVATIONS, "activation")] = "relu"
    batch_norm: bool = False
    # kind 'cnn': conv blocks' output channels, and their kernel size (hidden: the dense layers after them)
    channels: list[int] | None = None
    kernel: int | None = Field(default=None, ge=1, le=15)
    # kind 'module': a factory the operator installed (tuner.plugins), and its keyword arguments
    factory: str | None = Field(default=None, min_length=1, max_length=200)
    args: dict[str, Any] | None = None
    # kinds 'module' and 'cnn': the dropout modules' names in named_modules() order; the job fills
    # this in when it checks the model against the data (given, it must match)
    dropout_layers: list[str] | None = None

    @property
    def dropout_slots(self) -> int:
        """How many dropout rates the model takes: one per hidden layer, or per dropout module."""
        if self.kind == "module":
            return len(self.dropout_layers or [])
        return len(self.channels or []) + len(self.hidden or [])

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(h < 1 for h in v):
            raise ValueError(f"every hidden size must be >= 1, but got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        own = {"factory": ("module",), "args": ("module",), "dropout_layers": ("module", "cnn"),
               "channels": ("cnn",), "kernel": ("cnn",)}
        for key, kinds in own.items():
            if getattr(self, key) is not None and self.kind not in kinds:
                raise field_error(key, f"applies to kind {' or '.join(repr(k) for k in kinds)} only, "
                                  f"not {self.kind!r}")
        if self.kind == "cnn":
            self.channels = [32, 64] if self.channels is None else self.channels
            if not self.channels or any(c < 1 for c in self.channels):
                raise field_error("channels", f"a cnn needs at least one conv block, each with >= 1 channel, "
                                  f"but got {self.channels}")
            self.kernel = 3 if self.kernel is None else self.kernel
            if self.kernel % 2 == 0:
                raise field_error("kernel", f"must be odd (the padding keeps the image size), but got {self.kernel}")
            self.hidden = [128] if self.hidden is None else self.hidden
            return self
        if self.kind == "module":
            if self.factory is None:
                raise field_error("factory", "kind 'module' needs 'factory' ('<file>:<function>' or an entry point)")
            # the defaults stand for "not given" (a dumped spec holds them, and must parse again)
            given = {"hidden": self.hidden is not None, "activation": self.activation != "relu",
                     "batch_norm": self.batch_norm}
            for key in (k for k, v in given.items() if v):
                raise field_error(key, f"applies to kinds mlp, linear and cnn; a module's factory takes "
                                  f"its settings in 'args', so drop {key!r}")
            self.args = self.args or {}
            return self
        if self.kind == "linear":
            if self.hidden:
                raise field_error("hidden", f"the linear model has no hidden layers, but got hidden={self.hidden}")
            if self.batch_norm:
                raise field_error("batch_norm", "the linear model has no hidden layer to normalize; drop 'batch_norm'")
            self.hidden = []
        elif self.hidden is None:
            self.hidden = [256, 256]
        elif not self.hidden:
            raise field_error("hidden", "an mlp needs at least one hidden layer; use kind 'linear' for none")
        return self


class EarlyStopping(Strict):
    patience: int = Field(ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)


class TrainingSpec(Strict):
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    optimizer: Annotated[str, one_of(OPTIMIZERS, "optimizer")] = "adam"
    lr: float = Field(default=1e-3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    early_stopping: EarlyStopping | None = None
    # auto: a GPU when one is visible; checked against the machine at submit (tuner.devices)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast; fp16 with a gradient scaler


PATH_POINTS = 30


class StageSpec(Strict):
    """One stage. ``path`` walks λ₁ down from the value that removes every input (glmnet's path):
    on by default for a stage searching λ₁ alone; its ``trials`` are its points (30 unless given),
    spaced geometrically from λ_max down to λ_max·``path_eps``.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    params: list[str] = Field(default_factory=list)
    trials: int = Field(ge=1)
    path: bool | None = None
    path_eps: float = Field(default=1e-3, gt=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _path_points(cls, data: Any) -> Any:
        """A path stage may leave out ``trials``: it then has ``PATH_POINTS`` points."""
        if isinstance(data, dict) and "trials" not in data:
            on = data.get("path")
            if on or (on is None and data.get("params") == ["l1"]):
                return {**data, "trials": PATH_POINTS}
        return data

    @model_validator(mode="after")
    def _path(self) -> StageSpec:
        if self.path is None:
            self.path = self.params == ["l1"]
        if self.path and self.params != ["l1"]:
            raise field_error("path", f"a path walks λ₁ alone, but stage {self.name!r} searches {self.params}")
        if self.path and self.trials < 2:
            raise field_error("trials", f"a path needs at least 2 points, but got trials={self.trials}")
        return self


class SearchSpec(Strict):
    backend: Annotated[str, one_of(BACKENDS, "backend")] = "optuna"
    sampler: Annotated[str, one_of(SAMPLERS, "sampler")] = "tpe"
    pruner: Annotated[str, one_of(PRUNERS, "pruner")] = "median"
    objective: str | list[str] = "val_loss"
    parallelism: int = Field(default=1, ge=1, le=64)
    space: Space = Field(default_factory=Space)
    stages: list[StageSpec] | None = Field(default=None, description=(
        "run in order, each fixing its best values for the later ones; left out: a 'baseline' stage "
        "(1 trial, no regularization) then one 'joint' stage over every knob in space, 30 trials"))

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: str | list[str]) -> str | list[str]:
        for name in [v] if isinstance(v, str) else v:
            check_one_of(name, METRICS, "objective")
        if isinstance(v, list) and (len(v) != 2 or len(set(v)) != 2):
            raise ValueError(f"a Pareto objective is a pair of distinct metrics, but got {v}")
        if v == "gap":
            raise ValueError("'gap' alone is no objective (an untrained model has none); use [val_loss, gap]")
        return v

    @property
    def objectives(self) -> list[str]:
        return [self.objective] if isinstance(self.objective, str) else list(self.objective)


class ReportSpec(Strict):
    top_k: int = Field(default=3, ge=1, le=20)
    seeds: int = Field(default=3, ge=0, le=20)
    choose: Literal["best", "one_se"] = "best"
