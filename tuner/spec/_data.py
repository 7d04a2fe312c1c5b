"""The dataset part of the spec: where the data comes from and how it is split."""

from __future__ import annotations

import re
from typing import Annotated, Literal

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
SKLEARN_SHAPES = {  # rows, features: what a job costs is known before anything is loaded
    "digits": (1797, 64),
    "digits_images": (1797, 64),
    "breast_cancer": (569, 30),
    "wine": (178, 13),
    "iris": (150, 4),
    "diabetes": (442, 10),
}
SOURCES = ("sklearn", "csv", "synthetic", "npz", "upload", "images")
UPLOAD_ID = r"[0-9a-f]{64}"  # an upload's id: the sha256 of its bytes
TASKS = ("classification", "regression")
ONLY_FOR: dict[str, tuple[str, ...]] = {  # a field and the sources it applies to
    "name": ("sklearn",),
    "path": ("csv", "npz", "images"),
    "id": ("upload",),
    "size": ("images", "upload"),
    "channels": ("images", "upload"),
    "target": ("csv", "upload"),
    "max_levels": ("csv", "upload"),
    "task": ("csv", "synthetic", "npz", "upload"),
    "n_samples": ("synthetic",),
    "n_features": ("synthetic",),
    "n_informative": ("synthetic",),
    "n_classes": ("synthetic",),
    "noise": ("synthetic",),
}


def path_rule(path: str) -> str | None:
    """The rule a CSV path breaks, or None: a plain relative path under the data dir, no hidden parts.

    Dotfiles (``.env``) and dot folders hold secrets far more often than data, and ``..`` leaves
    the data dir; a NUL or another control character is no file name at all.
    """
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return "must be a file name without control characters (NUL, newline, ...)"
    parts = path.replace("\\", "/").split("/")
    if path.startswith(("/", "\\")) or (len(parts[0]) >= 2 and parts[0][1] == ":"):
        return f"must be relative to REGTUNE_DATA_DIR, but got {path!r}"
    if any(part.startswith(".") for part in parts):
        return f"must name no hidden file or folder (a part starting with '.', '..' included), but got {path!r}"
    return None


def _check_synthetic_classes(spec: DatasetSpec) -> None:
    """Classification rules of scikit-learn's ``make_classification``, said in the spec's words."""
    if spec.task != "classification":
        return
    noise, classes, informative = spec.noise or 0.0, spec.n_classes or 2, spec.n_informative or 1
    if noise > 1.0:
        raise field_error("noise", f"for classification noise is the fraction of labels flipped, so noise <= 1 must "
                  f"hold, but got noise={noise}")
    clusters = spec.clusters_per_class
    if classes * clusters > 2 ** informative:
        raise field_error("n_classes", f"n_classes * clusters <= 2**n_informative must hold (each class needs its "
                  f"own corners of the informative space), but got n_classes={classes}, clusters={clusters}, "
                  f"n_informative={informative}")
    if (spec.n_samples or 1000) < 3 * classes:
        raise field_error("n_samples", f"each class needs rows in train, val and test: n_samples >= 3 * n_classes = "
                  f"{3 * classes} must hold, but got n_samples={spec.n_samples}")


class Split(Strict):
    """Fractions for val and test, or a column whose values are train/val/test.

    ``folds`` (instead of ``val``) cross-validates: each trial's val loss is the
    mean over that many folds of the non-test rows, for data too small to spare
    a validation split.
    """

    val: float | None = Field(default=None, description="fraction of the rows for validation, in (0, 1); "
                                                         "default 0.15")
    test: float | None = Field(default=None, description="fraction of the rows held out for the test, measured "
                                                          "once in the report; default 0.15 (val + test < 0.9)")
    column: str | None = Field(default=None, description="source csv: a column whose values (train, val, test) "
                                                          "say each row's split; instead of the fractions")
    folds: int | None = Field(default=None, ge=2, le=20,
                              description="instead of val: cross-validate, each trial's val loss the mean over "
                                          "this many folds of the non-test rows")

    @model_validator(mode="after")
    def _check(self) -> Split:
        if self.column is not None:
            if self.val is not None or self.test is not None or self.folds is not None:
                raise field_error("column", "give either 'column' or the fractions 'val' and 'test' (or "
                                  "'folds'), not both")
            return self
        if self.folds is not None:
            if self.val is not None:
                raise field_error("folds", "give either 'val' (one validation split) or 'folds' "
                                  "(cross-validation), not both")
            test = 0.15 if self.test is None else self.test
            if not 0.0 < test < 0.9:
                raise field_error("test", f"must be in the open interval (0, 0.9), but got {test}")
            self.test = test
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
    path: str | None = Field(default=None, max_length=1024,
                             description="source csv or npz: the file, relative to REGTUNE_DATA_DIR (no '..', no "
                                         "hidden parts), a CSV with a header row, its features numbers or text "
                                         "categories, missing values allowed; source images: the folder, one "
                                         "subfolder of PNG or JPEG files per class")
    id: str | None = Field(default=None, max_length=200,
                           description="source upload: the id (sha256) POST /datasets answered")
    size: list[Annotated[int, Field(ge=1, le=1024)]] | None = Field(
        default=None, min_length=2, max_length=2,
        description="source images (or an uploaded zip of images): [height, width] every image is resized to; "
                    "default the images' own size when they all share one")
    channels: Literal[1, 3] | None = Field(
        default=None, description="source images (or an uploaded zip of images): 1 (grayscale) or 3 (RGB); "
                                  "default 1 when every image is grayscale, else 3")
    target: str | None = Field(default=None, min_length=1, max_length=1024,
                               description="source csv, or an uploaded CSV: the target column's name")
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
    noise: float | None = Field(default=None, ge=0.0,
                                description="source synthetic (default 0.1): for classification the fraction of "
                                            "labels flipped (at most 1), for regression the noise's std")
    split: Split = Field(default_factory=Split, description="how rows are split into train, val and test")
    standardize: bool = Field(default=True, description="scale features (and a regression target) to mean 0, "
                                                        "std 1, with the training split's statistics")
    max_levels: int | None = Field(default=None, ge=2, le=1000, exclude_if=lambda v: v is None,
                                   description="a table's text or boolean column (a category) becomes at most "
                                               "this many one-hot columns: the most frequent levels of the "
                                               "training split, the rest in one 'other' column (default 20)")


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
            if (broken := path_rule(self.path)) is not None:
                raise field_error("path", broken)
        elif self.source == "images":
            if not self.path:
                raise field_error("path", "source 'images' needs 'path' (a folder under REGTUNE_DATA_DIR with one "
                                  "subfolder of PNG or JPEG files per class)")
            if (broken := path_rule(self.path)) is not None:
                raise field_error("path", broken)
        elif self.source == "csv":
            if not self.path or not self.target:
                raise field_error("path" if not self.path else "target", "source 'csv' needs 'path' and 'target'")
            if (broken := path_rule(self.path)) is not None:
                raise field_error("path", broken)
        elif self.source == "upload":
            if not self.id:
                raise field_error("id", "source 'upload' needs 'id' (the id POST /datasets answered)")
            if not re.fullmatch(UPLOAD_ID, self.id):
                raise field_error("id", f"must be 64 lowercase hex digits (the sha256 POST /datasets answered), "
                                  f"but got {self.id!r}")
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
            _check_synthetic_classes(self)
            if self.n_informative > self.n_features:
                raise field_error(
                    "n_informative",
                    f"n_informative <= n_features must hold, but got "
                    f"(n_informative={self.n_informative}, n_features={self.n_features})"
                )
        if self.split.column is not None and self.source not in ("csv", "upload"):
            raise field_error("split", "split by 'column' needs source 'csv' or 'upload'")
        return self

    @property
    def clusters_per_class(self) -> int:
        """Synthetic classification: clusters per class (two need at least 4 informative features)."""
        return 1 if (self.n_informative or 5) < 4 else 2

    @property
    def known_shape(self) -> tuple[int, int] | None:
        """(rows, feature columns) when known before reading data: a CSV's only once it is read."""
        if self.source == "sklearn":
            return SKLEARN_SHAPES[self.name or ""]
        if self.source == "synthetic":
            return self.n_samples or 1000, self.n_features or 20
        return None

    @property
    def known_task(self) -> str | None:
        """The task when it is known before reading data (a CSV may leave it to the data)."""
        if self.source == "sklearn":
            return SKLEARN_DATASETS[self.name or ""]
        if self.source == "images":
            return "classification"
        return self.task
