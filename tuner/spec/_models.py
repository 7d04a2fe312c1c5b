"""The parts of a job spec: model, training, search and its stages, report.

The dataset part and the knob priors have modules of their own. Field names follow DESIGN.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from tuner import registry
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

# the names come from the registries, where the code that builds each thing loads it
MODEL_KINDS = registry.MODEL_KINDS.names
ACTIVATIONS = registry.ACTIVATIONS.names
OPTIMIZERS = registry.OPTIMIZERS.names
SAMPLERS = registry.SAMPLERS.names
PRUNERS = registry.PRUNERS.names
METRICS = ("val_loss", "val_error", "gap")
BACKENDS = registry.BACKENDS.names


class ModelSpec(Strict):
    """The torch model every trial trains."""

    kind: Annotated[str, one_of(MODEL_KINDS, "model kind")] = Field(
        default="mlp", description="mlp (a multi-layer perceptron) | linear (logistic or linear regression, no "
                                  "hidden layer) | cnn (conv blocks, then dense layers) | module (an installed "
                                  "factory's torch module)")
    hidden: list[int] | None = Field(default=None, description="mlp: the hidden layers' widths (default "
                                                               "[256, 256]); linear: none")
    activation: Annotated[str, one_of(ACTIVATIONS, "activation")] = Field(
        default="relu", description=f"mlp: the hidden layers' activation, one of {', '.join(ACTIVATIONS)}")
    batch_norm: bool = Field(default=False, description="mlp: batch normalization after each hidden layer "
                                                        "(never penalized by L1 or L2)")
    channels: list[int] | None = Field(default=None, description="cnn: the conv blocks' output channels (hidden: "
                                                                 "the dense layers after them)")
    kernel: int | None = Field(default=None, ge=1, le=15, description="cnn: the conv kernel size")
    factory: str | None = Field(default=None, min_length=1, max_length=200,
                                description="module: a model factory the operator installed (REGTUNE_MODELS_DIR "
                                            "`file:function`, or a `regtune.models` entry point; GET /models)")
    args: dict[str, Any] | None = Field(default=None, description="module: the factory's keyword arguments")
    dropout_layers: list[str] | None = Field(
        default=None, description="module and cnn: the dropout modules' names in named_modules() order, one "
                                  "per-layer dropout knob each; the job fills it in (given, it must match)")

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
    """Stop a run when the val loss stops improving."""

    patience: int = Field(ge=1, description="epochs without improvement before the run stops")
    min_delta: float = Field(default=0.0, ge=0.0, description="how much the val loss must fall to count as an "
                                                              "improvement")


class TrainingSpec(Strict):
    """How each trial trains."""

    epochs: int = Field(default=30, ge=1, description="epochs per run (at most: early stopping may end sooner)")
    batch_size: int = Field(default=128, ge=1, description="examples per minibatch")
    optimizer: Annotated[str, one_of(OPTIMIZERS, "optimizer")] = Field(
        default="adam", description=f"one of {', '.join(OPTIMIZERS)}; with adamw, L2 is decoupled weight decay "
                                    f"(2·λ₂) on the weights, otherwise the penalty λ₂·Σw² in the loss")
    lr: float = Field(default=1e-3, gt=0.0, description="learning rate")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="optimizer sgd: its momentum")
    early_stopping: EarlyStopping | None = Field(default=None, description="stop a run early when the val loss "
                                                                           "stops improving; none: every epoch")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d{1,2})?)$",
                        description="auto (a GPU when one is visible) | cpu | mps | cuda | cuda:N; checked against "
                                    "the machine at submit")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="fp32 | bf16 | fp16: autocast in half precision (fp16 with a gradient scaler); "
                                    "losses are measured in fp32")


PATH_POINTS = 30


class StageSpec(Strict):
    """One stage. ``path`` walks λ₁ down from the value that removes every input (glmnet's path):
    on by default for a stage searching λ₁ alone; its ``trials`` are its points (30 unless given),
    spaced geometrically from λ_max down to λ_max·``path_eps``.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="unique within the job; the stage's study is `<job name>/<name>`")
    params: list[str] = Field(default_factory=list,
                              description="the knobs this stage searches, each in search.space; empty for the "
                                          "baseline, which only the first stage may be")
    trials: int = Field(ge=1, description="the stage's budget: trials that must complete or be pruned; a path's "
                                          "points (30 when left out)")
    path: bool | None = Field(default=None, description="walk λ₁ down from λ_max (the value that removes every "
                                                        "input) as glmnet does, each point warm-started from the "
                                                        "last; on by default for a stage searching l1 alone")
    path_eps: float = Field(default=1e-3, gt=0.0, lt=1.0, description="a path ends at λ_max·path_eps, its points "
                                                                      "spaced geometrically")

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
    """What is searched, in which stages, and how."""

    backend: Annotated[str, one_of(BACKENDS, "backend")] = Field(
        default="optuna", description="where a stage's trials run: optuna (threads in this process) | ray (Ray "
                                      "Tune, a local cluster or the one RAY_ADDRESS names)")
    sampler: Annotated[str, one_of(SAMPLERS, "sampler")] = Field(
        default="tpe", description=f"the Optuna sampler, one of {', '.join(SAMPLERS)}; grid needs `grid:` or "
                                   f"`values:` on every knob a stage searches, and no more trials than points")
    pruner: Annotated[str, one_of(PRUNERS, "pruner")] = Field(
        default="median", description=f"stops unpromising trials on their per-epoch val loss, one of "
                                      f"{', '.join(PRUNERS)}; none for a Pareto objective")
    objective: str | list[str] = Field(
        default="val_loss", description="what each stage minimizes: val_loss | val_error (classification) | "
                                        "[val_loss, gap] for a Pareto search (two objectives)")
    parallelism: int = Field(default=1, ge=1, le=64, description="trials at once")
    batch: int | str = Field(
        default="auto", description="auto | K: how many trials of a stage train together as one batched model (on "
                                    "the CPU in fp32; on Ray a Tune trial carries K). auto sizes K for an mlp or "
                                    "linear model from the model, the cores and the stage's trials, and trains a "
                                    "module or cnn one at a time; K > 1 batches a module or cnn through "
                                    "torch.func.vmap where its forward allows, else one at a time, saying why in "
                                    "the study's batched_reason; 1: one at a time")
    train_curve: bool = Field(
        default=False, description="measure each search trial's plain train loss after every epoch (its train_curve "
                                   "in GET /jobs/{id}/trials?curves=true): an eval-mode pass over the training "
                                   "split per epoch, about 1.4 times a batched trial's time. false: a trial's train "
                                   "loss and gap are measured once, from the weights of the epoch it keeps (a "
                                   "pruned trial has its val loss only). The report's baseline and chosen runs "
                                   "keep both curves either way")
    space: Space = Field(default_factory=Space, description="the knobs' priors; a knob left out is never used")
    stages: list[StageSpec] | None = Field(default=None, description=(
        "run in order, each fixing its best values for the later ones; left out: a 'baseline' stage "
        "(1 trial, no regularization) then one 'joint' stage over every knob in space, 30 trials; a baseline "
        "is put first when the stages given have none"))

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

    @field_validator("batch")
    @classmethod
    def _batch(cls, v: int | str) -> int | str:
        if v == "auto" or (isinstance(v, int) and 1 <= v <= 256):
            return v
        raise ValueError(f"must be 'auto' or an int in the range [1, 256], but got {v!r}")

    @property
    def objectives(self) -> list[str]:
        return [self.objective] if isinstance(self.objective, str) else list(self.objective)


class ReportSpec(Strict):
    """How the report chooses: the best few configurations re-trained over seeds, then a rule."""

    top_k: int = Field(default=3, ge=1, le=20, description="the last stage's best configurations re-trained, "
                                                            "with the baseline, before the choice")
    seeds: int = Field(default=3, ge=0, le=20, description="other seeds each candidate is re-trained with; the "
                                                           "choice is made on the mean val loss")
    choose: Literal["best", "one_se"] = Field(
        default="best", description="best: the lowest mean val loss | one_se: the most regularized candidate "
                                    "within one standard error of the best (glmnet's lambda.1se)")
