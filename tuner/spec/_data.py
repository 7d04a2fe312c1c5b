"""The dataset part of the spec: where the data comes from and how it is split."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from tuner.spec._base import Strict, check_one_of, field_error, one_of

SKLEARN_DATASETS = {
    "digits": "classification",
    "digits_images": "classification",  # the same 8x8 digits as 1x8x8 images (for a cnn)
    "breast_cancer": "classification",
    "wine": "classification",
    "iris": "classification",
    "diabetes": "regression",
}
SOURCES = ("sklearn", "csv", "synthetic", "npz")
TASKS = ("classification", "regression")
ONLY_FOR: dict[str, tuple[str, ...]] = {  # a field and the sources it applies to
    "name": ("sklearn",),
    "path": ("csv", "npz"),
    "target": ("csv",),
    "task": ("csv", "synthetic", "npz"),
    "n_samples": ("synthetic",),
    "n_features": ("synthetic",),
    "n_informative": ("synthetic",),
    "n_classes": ("synthetic",),
    "noise": ("synthetic",),
}


class Split(Strict):
    """Fractions for val and test, or a column whose values are train/val/test."""

    val: float | None = None
    test: float | None = None
    column: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Split:
        if self.column is not None:
            if self.val is not None or self.test is not None:
                raise field_error("column", "give either 'column' or the fractions 'val' and 'test', not both")
            return self
        val = 0.15 if self.val is None else self.val
        test = 0.15 if self.test is None else self.test
        for key, frac in (("val", val), ("test", test)):
            if not 0.0 < frac < 1.0:
                raise field_error(key, f"must be in the open interval (0, 1), but got {frac}")
        if val + test >= 0.9:
            raise ValueError(f"val + test must leave at least 10% for training, but got val={val}, test={test}")
        self.val, self.test = val, test
        return self


class DatasetSpec(Strict):
    source: Annotated[str, one_of(SOURCES, "source")]
    name: str | None = None
    path: str | None = None
    target: str | None = None
    task: Annotated[str, one_of(TASKS, "task")] | None = None
    n_samples: int | None = Field(default=None, ge=20, le=1_000_000)
    n_features: int | None = Field(default=None, ge=1, le=10_000)
    n_informative: int | None = Field(default=None, ge=1)
    n_classes: int | None = Field(default=None, ge=2, le=100)
    noise: float | None = Field(default=None, ge=0.0)
    split: Split = Field(default_factory=Split)
    standardize: bool = True


    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        for key, sources in ONLY_FOR.items():
            if getattr(self, key) is not None and self.source not in sources:
                raise field_error(key, f"applies to source {' or '.join(sources)}, not {self.source!r}")
        if self.source == "sklearn":
            if self.name is None:
                raise field_error("name", "source 'sklearn' needs 'name'")
            try:
                check_one_of(self.name, list(SKLEARN_DATASETS), "sklearn dataset")
            except ValueError as exc:
                raise field_error("name", str(exc)) from None
        elif self.source == "npz":
            if not self.path:
                raise field_error("path", "source 'npz' needs 'path' (arrays X, y and optionally fold, under "
                                  "REGTUNE_DATA_DIR)")
        elif self.source == "csv":
            if not self.path or not self.target:
                raise field_error("path" if not self.path else "target", "source 'csv' needs 'path' and 'target'")
        else:
            self.task = self.task or "classification"
            self.n_samples = self.n_samples or 1000
            self.n_features = self.n_features or 20
            self.n_informative = self.n_informative or min(5, self.n_features)
            self.noise = 0.1 if self.noise is None else self.noise
            if self.task == "classification":
                self.n_classes = self.n_classes or 2
            elif self.n_classes is not None:
                raise field_error("n_classes", "applies to task 'classification' only")
            if self.n_informative > self.n_features:
                raise field_error(
                    "n_informative",
                    f"n_informative <= n_features must hold, but got "
                    f"(n_informative={self.n_informative}, n_features={self.n_features})"
                )
        if self.split.column is not None and self.source != "csv":
            raise field_error("split", "split by 'column' needs source 'csv'")
        return self

    @property
    def known_task(self) -> str | None:
        """The task when it is known before reading data (a CSV may leave it to the data)."""
        if self.source == "sklearn":
            return SKLEARN_DATASETS[self.name or ""]
        return self.task
