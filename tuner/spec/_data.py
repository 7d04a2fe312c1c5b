"""The dataset part of the spec: where the data comes from and how it is split."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from tuner.spec._base import Strict, check_one_of, field_error, one_of

SKLEARN_DATASETS = {
    "digits": "classification",
    "breast_cancer": "classification",
    "wine": "classification",
    "iris": "classification",
    "diabetes": "regression",
}
SOURCES = ("sklearn", "csv", "synthetic")
TASKS = ("classification", "regression")
ONLY_FOR: dict[str, tuple[str, ...]] = {  # a field and the sources it applies to
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


class Split(Strict):
    """Fractions for val and test, or a column whose values are train/val/test."""

    val: float | None = Field(default=None, description="fraction of the rows for validation, in (0, 1); "
                                                         "default 0.15")
    test: float | None = Field(default=None, description="fraction of the rows held out for the test, measured "
                                                          "once in the report; default 0.15 (val + test < 0.9)")
    column: str | None = Field(default=None, description="source csv: a column whose values (train, val, test) "
                                                          "say each row's split; instead of the fractions")

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
    source: Annotated[str, one_of(SOURCES, "source")] = Field(
        description=f"where the data comes from: {' | '.join(SOURCES)}")
    name: str | None = Field(default=None, description=f"source sklearn: the dataset, one of "
                                                       f"{', '.join(SKLEARN_DATASETS)}")
    path: str | None = Field(default=None, description="source csv: the file, relative to REGTUNE_DATA_DIR; a "
                                                       "header row, numeric feature columns")
    target: str | None = Field(default=None, description="source csv: the target column's name")
    task: Annotated[str, one_of(TASKS, "task")] | None = Field(
        default=None, description="classification | regression; source synthetic (default classification) or "
                                  "csv (default: inferred from the target column)")
    n_samples: int | None = Field(default=None, ge=20, le=1_000_000,
                                  description="source synthetic: rows (default 1000)")
    n_features: int | None = Field(default=None, ge=1, le=10_000,
                                   description="source synthetic: input features (default 20)")
    n_informative: int | None = Field(default=None, ge=1,
                                      description="source synthetic: features that carry signal, the rest noise "
                                                  "(default 5, at most n_features)")
    n_classes: int | None = Field(default=None, ge=2, le=100,
                                  description="source synthetic, task classification: classes (default 2)")
    noise: float | None = Field(default=None, ge=0.0, description="source synthetic: noise added to the target "
                                                                  "(default 0.1)")
    split: Split = Field(default_factory=Split, description="how rows are split into train, val and test")
    standardize: bool = Field(default=True, description="scale features (and a regression target) to mean 0, "
                                                        "std 1, with the training split's statistics")


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
