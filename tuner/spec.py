"""The job spec: the one contract between the CLI, the API and the runner.

Every rule is checked here, up front, so a job never starts with a spec that
fails half-way. Field names follow DESIGN.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from tuner._spec_base import _at, _one_of, _Strict, one_of
from tuner._spec_data import SKLEARN_DATASETS, DatasetSpec
from tuner._spec_errors import issues_from_validation_error
from tuner._spec_knobs import KNOBS, KnobRange, Space
from tuner._spec_rules import cross_check
from tuner.errors import Issue, SpecError

__all__ = [
    "KNOBS",
    "SKLEARN_DATASETS",
    "DatasetSpec",
    "JobSpec",
    "KnobRange",
    "ModelSpec",
    "ReportSpec",
    "SearchSpec",
    "StageSpec",
    "TrainingSpec",
    "load_spec",
    "parse_spec",
]

MODEL_KINDS = ("mlp", "linear")
ACTIVATIONS = ("relu", "tanh", "gelu", "silu", "elu", "leaky_relu")
OPTIMIZERS = ("adam", "adamw", "sgd")
SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "qmc", "nsga2")
PRUNERS = ("none", "median", "hyperband")
METRICS = ("val_loss", "val_error", "gap")
BACKENDS = ("optuna", "ray")


class ModelSpec(_Strict):
    kind: Annotated[str, one_of(MODEL_KINDS, "model kind")] = "mlp"
    hidden: list[int] | None = None
    activation: Annotated[str, one_of(ACTIVATIONS, "activation")] = "relu"
    batch_norm: bool = False

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(h < 1 for h in v):
            raise ValueError(f"every hidden size must be >= 1, but got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.kind == "linear":
            if self.hidden:
                raise _at("hidden", f"the linear model has no hidden layers, but got hidden={self.hidden}")
            if self.batch_norm:
                raise _at("batch_norm", "the linear model has no hidden layer to normalize; drop 'batch_norm'")
            self.hidden = []
        elif self.hidden is None:
            self.hidden = [256, 256]
        elif not self.hidden:
            raise _at("hidden", "an mlp needs at least one hidden layer; use kind 'linear' for none")
        return self


class EarlyStopping(_Strict):
    patience: int = Field(ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)


class TrainingSpec(_Strict):
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    optimizer: Annotated[str, one_of(OPTIMIZERS, "optimizer")] = "adam"
    lr: float = Field(default=1e-3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    early_stopping: EarlyStopping | None = None


class StageSpec(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    params: list[str] = Field(default_factory=list)
    trials: int = Field(ge=1)


class SearchSpec(_Strict):
    backend: Annotated[str, one_of(BACKENDS, "backend")] = "optuna"
    sampler: Annotated[str, one_of(SAMPLERS, "sampler")] = "tpe"
    pruner: Annotated[str, one_of(PRUNERS, "pruner")] = "median"
    objective: str | list[str] = "val_loss"
    parallelism: int = Field(default=1, ge=1, le=64)
    batch: int | str = 1  # "auto" or K: how many trials train together as one batched model
    space: Space = Field(default_factory=Space)
    stages: list[StageSpec] | None = None

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: str | list[str]) -> str | list[str]:
        for name in [v] if isinstance(v, str) else v:
            _one_of(name, METRICS, "objective")
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


class ReportSpec(_Strict):
    top_k: int = Field(default=3, ge=1, le=20)
    seeds: int = Field(default=3, ge=0, le=20)
    choose: Literal["best", "one_se"] = "best"


class JobSpec(_Strict):
    """A tuning job: what to train, on what, and which regularization knobs to search in which stages."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    dataset: DatasetSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @property
    def stages(self) -> list[StageSpec]:
        assert self.search.stages is not None  # filled in by cross_check
        return self.search.stages

    @property
    def task(self) -> str | None:
        return self.dataset.known_task


def parse_spec(data: Any) -> JobSpec:
    """Validate a decoded spec (a mapping) into a JobSpec.

    Raises:
        SpecError: naming every broken rule with its field path.
    """
    if not isinstance(data, dict):
        raise SpecError.one("", f"a job spec must be a mapping, but got {type(data).__name__}")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(issues_from_validation_error(exc, JobSpec)) from None
    issues = cross_check(spec)
    if issues:
        raise SpecError(issues)
    return spec


def load_spec(source: str | Path | bytes) -> JobSpec:
    """Read a spec from a YAML/JSON file path or from the document text itself.

    Raises:
        SpecError: the document does not parse, or breaks a rule.
    """
    looks_like_path = isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json"))
    try:
        if isinstance(source, Path) or looks_like_path:
            path = Path(source)  # type: ignore[arg-type]
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise SpecError.one("", f"cannot read spec file {str(path)!r}: {exc.strerror}") from None
        else:
            text = source.decode("utf-8") if isinstance(source, bytes) else str(source)
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError([Issue("", f"the spec is not valid YAML or JSON: {first}")]) from None
    return parse_spec(data)
