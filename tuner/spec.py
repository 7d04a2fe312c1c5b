"""The job spec: the one contract between the CLI, the API and the runner.

Every rule is checked here, up front, so a job never starts with a spec that
fails half-way. Field names follow DESIGN.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuner._spec_errors import FIELD_MARK, issues_from_validation_error
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

KNOBS = ("l1", "l2", "dropout", "input_dropout", "label_smoothing")
SKLEARN_DATASETS = {
    "digits": "classification",
    "breast_cancer": "classification",
    "wine": "classification",
    "iris": "classification",
    "diabetes": "regression",
}
SOURCES = ("sklearn", "csv", "synthetic")
TASKS = ("classification", "regression")
MODEL_KINDS = ("mlp", "linear")
ACTIVATIONS = ("relu", "tanh", "gelu", "silu", "elu", "leaky_relu")
OPTIMIZERS = ("adam", "adamw", "sgd")
SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "qmc", "nsga2")
PRUNERS = ("none", "median", "hyperband")
METRICS = ("val_loss", "val_error", "gap")
BACKENDS = ("optuna", "ray")


def _one_of(value: str, valid: tuple[str, ...] | list[str], what: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid {what}s are: {', '.join(valid)}")
    return value


def _at(field: str, message: str) -> ValueError:
    """A model-level error that belongs to one field (the converter moves it there)."""
    return ValueError(f"{FIELD_MARK}{field}{FIELD_MARK}{message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Split(_Strict):
    """Fractions for val and test, or a column whose values are train/val/test."""

    val: float | None = None
    test: float | None = None
    column: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Split:
        if self.column is not None:
            if self.val is not None or self.test is not None:
                raise _at("column", "give either 'column' or the fractions 'val' and 'test', not both")
            return self
        val = 0.15 if self.val is None else self.val
        test = 0.15 if self.test is None else self.test
        for key, frac in (("val", val), ("test", test)):
            if not 0.0 < frac < 1.0:
                raise _at(key, f"must be in the open interval (0, 1), but got {frac}")
        if val + test >= 0.9:
            raise ValueError(f"val + test must leave at least 10% for training, but got val={val}, test={test}")
        self.val, self.test = val, test
        return self


class DatasetSpec(_Strict):
    source: str
    name: str | None = None
    path: str | None = None
    target: str | None = None
    task: str | None = None
    n_samples: int | None = Field(default=None, ge=20, le=1_000_000)
    n_features: int | None = Field(default=None, ge=1, le=10_000)
    n_informative: int | None = Field(default=None, ge=1)
    n_classes: int | None = Field(default=None, ge=2, le=100)
    noise: float | None = Field(default=None, ge=0.0)
    split: Split = Field(default_factory=Split)
    standardize: bool = True

    _only: dict[str, tuple[str, ...]] = {
        "name": ("sklearn",),
        "path": ("csv",),
        "target": ("csv",),
        "task": ("csv", "synthetic"),
        "n_samples": ("synthetic",),
        "n_features": ("synthetic",),
        "n_informative": ("synthetic",),
        "n_classes": ("synthetic",),
        "noise": ("synthetic",),
    }

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _one_of(v, SOURCES, "source")

    @field_validator("task")
    @classmethod
    def _task(cls, v: str | None) -> str | None:
        return None if v is None else _one_of(v, TASKS, "task")

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        for key, sources in self._only.items():
            if getattr(self, key) is not None and self.source not in sources:
                raise _at(key, f"applies to source {' or '.join(sources)}, not {self.source!r}")
        if self.source == "sklearn":
            if self.name is None:
                raise _at("name", "source 'sklearn' needs 'name'")
            try:
                _one_of(self.name, list(SKLEARN_DATASETS), "sklearn dataset")
            except ValueError as exc:
                raise _at("name", str(exc)) from None
        elif self.source == "csv":
            if not self.path or not self.target:
                raise _at("path" if not self.path else "target", "source 'csv' needs 'path' and 'target'")
        else:
            self.task = self.task or "classification"
            self.n_samples = self.n_samples or 1000
            self.n_features = self.n_features or 20
            self.n_informative = self.n_informative or min(5, self.n_features)
            self.noise = 0.1 if self.noise is None else self.noise
            if self.task == "classification":
                self.n_classes = self.n_classes or 2
            elif self.n_classes is not None:
                raise _at("n_classes", "applies to task 'classification' only")
            if self.n_informative > self.n_features:
                raise _at(
                    "n_informative",
                    f"n_informative <= n_features must hold, but got "
                    f"(n_informative={self.n_informative}, n_features={self.n_features})"
                )
        if self.split.column is not None and self.source != "csv":
            raise _at("split", "split by 'column' needs source 'csv'")
        return self

    @property
    def known_task(self) -> str | None:
        """The task when it is known before reading data (a CSV may leave it to the data)."""
        if self.source == "sklearn":
            return SKLEARN_DATASETS[self.name or ""]
        return self.task


class ModelSpec(_Strict):
    kind: str = "mlp"
    hidden: list[int] | None = None
    activation: str = "relu"
    batch_norm: bool = False

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        return _one_of(v, MODEL_KINDS, "model kind")

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return _one_of(v, ACTIVATIONS, "activation")

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
    optimizer: str = "adam"
    lr: float = Field(default=1e-3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    early_stopping: EarlyStopping | None = None

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        return _one_of(v, OPTIMIZERS, "optimizer")


class KnobRange(_Strict):
    """A prior over one knob: uniform or log-uniform in [low, high], optionally also exactly 0."""

    low: float
    high: float
    log: bool = False
    allow_zero: bool = False
    per_layer: bool = False
    grid: int | None = Field(default=None, ge=2, le=1000)
    values: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> KnobRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, but got (low={self.low}, high={self.high})")
        if self.low > self.high:
            raise ValueError(f"low <= high must hold, but got (low={self.low}, high={self.high})")
        if self.low < 0:
            raise ValueError(f"low >= 0 must hold, but got low={self.low}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log prior needs low > 0, but got low={self.low}; use allow_zero: true to reach 0")
        if self.grid is not None and self.values is not None:
            raise ValueError("give either 'grid' (a number of points) or 'values', not both")
        if self.values is not None:
            if not self.values:
                raise ValueError("'values' must not be empty")
            bad = [v for v in self.values if not (self.low <= v <= self.high or (v == 0 and self.allow_zero))]
            if bad:
                raise ValueError(f"every value must lie in [low, high] = [{self.low}, {self.high}], but got {bad}")
        return self

    def grid_values(self) -> list[float] | None:
        """The finite grid of this knob (log-spaced for a log prior), or None when it has none."""
        if self.values is not None:
            vals = sorted(set(self.values))
        elif self.grid is not None:
            n = self.grid - (1 if self.allow_zero else 0)
            if n < 1:
                vals = []
            elif n == 1:
                vals = [self.low]
            elif self.log:
                a, b = math.log10(self.low), math.log10(self.high)
                vals = [10 ** (a + (b - a) * i / (n - 1)) for i in range(n)]
            else:
                vals = [self.low + (self.high - self.low) * i / (n - 1) for i in range(n)]
        else:
            return None
        return sorted(set(([0.0] if self.allow_zero else []) + vals))


class Space(_Strict):
    l1: KnobRange | None = None
    l2: KnobRange | None = None
    dropout: KnobRange | None = None
    input_dropout: KnobRange | None = None
    label_smoothing: KnobRange | None = None

    @model_validator(mode="after")
    def _check(self) -> Space:
        for knob in ("dropout", "input_dropout", "label_smoothing"):
            rng = getattr(self, knob)
            if rng is not None and rng.high >= 1.0:
                raise _at(knob, f"high < 1 must hold, but got high={rng.high}")
        for knob in KNOBS:
            rng = getattr(self, knob)
            if rng is not None and rng.per_layer and knob != "dropout":
                raise _at(knob, "per_layer applies to 'dropout' only")
        return self

    def ranges(self) -> dict[str, KnobRange]:
        return {k: r for k in KNOBS if (r := getattr(self, k)) is not None}


class StageSpec(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    params: list[str] = Field(default_factory=list)
    trials: int = Field(ge=1)


class SearchSpec(_Strict):
    backend: str = "optuna"
    sampler: str = "tpe"
    pruner: str = "median"
    objective: str | list[str] = "val_loss"
    parallelism: int = Field(default=1, ge=1, le=64)
    space: Space = Field(default_factory=Space)
    stages: list[StageSpec] | None = None

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return _one_of(v, BACKENDS, "backend")

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        return _one_of(v, SAMPLERS, "sampler")

    @field_validator("pruner")
    @classmethod
    def _pruner(cls, v: str) -> str:
        return _one_of(v, PRUNERS, "pruner")

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
