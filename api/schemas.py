"""Wire schemas: what the API answers. Tables (``JobRow``) never leave the service as they are."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from api.tables import JobRow, JobStatus
from tuner.report import StageProgress  # the job page's model, answered as it is

__all__ = [
    "BestSoFar",
    "ColumnPublic",
    "DatasetPublic",
    "ErrorBody",
    "ErrorDetail",
    "FactoryPublic",
    "Health",
    "IssuePublic",
    "JobDetail",
    "JobPublic",
    "JobsPublic",
    "StageProgress",
    "TrialPublic",
    "TrialsPublic",
]


class IssuePublic(BaseModel):
    field: str = Field(description="dotted path of the field that broke a rule; empty for the whole body")
    message: str = Field(description="the rule, and the value received")
    value: Any = Field(default=None, description="the value received, when it is short")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable: invalid_spec, job_not_found, job_finished, ...")
    message: str
    issues: list[IssuePublic] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """The one shape of every error the service answers."""

    error: ErrorDetail


class JobPublic(BaseModel):
    """A job as listed: where it stands, not how far its stages got."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: JobStatus
    attempts: int = Field(description="how many times a runner has claimed the job")
    cancel_requested: bool
    study_prefix: str = Field(description="its stages' studies are named <study_prefix>/<stage>")
    error: str | None
    lease_owner: str | None = Field(description="the runner holding the job, or that held it last")
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @field_serializer("lease_expires_at", "heartbeat_at", "created_at", "updated_at", "started_at", "finished_at")
    def _utc(self, value: datetime | None) -> str | None:
        """Stored naive in UTC; answered in ISO 8601 with the zone."""
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()

    @classmethod
    def of(cls, row: JobRow) -> JobPublic:
        return cls.model_validate(row)


class BestSoFar(BaseModel):
    stage: str
    study_name: str
    trial: int = Field(description="the trial's number in its study")
    value: float | None = Field(description="its first objective (the val loss, unless val_error)")
    params: dict[str, Any] = Field(description="its full knob configuration")


class JobDetail(JobPublic):
    """A job with its per-stage progress, read from Optuna's storage, and the best trial so far."""

    spec: dict[str, Any]
    stages: list[StageProgress]
    best: BestSoFar | None

    @classmethod
    def with_progress(cls, row: JobRow, stages: list[StageProgress], best: BestSoFar | None) -> JobDetail:
        fields = {name: getattr(row, name) for name in JobPublic.model_fields}
        return cls(**fields, spec=row.spec, stages=stages, best=best)


class JobsPublic(BaseModel):
    items: list[JobPublic]
    total: int = Field(description="jobs matching the filter, all pages together")
    limit: int
    offset: int


class TrialPublic(BaseModel):
    stage: str
    study_name: str
    number: int
    state: str = Field(description="Optuna's trial state: COMPLETE, PRUNED, FAIL, RUNNING, WAITING")
    values: list[float | None] | None
    params: dict[str, Any] = Field(description="the knobs the stage's sampler chose")
    config: dict[str, Any] = Field(description="every knob the trial trained with (earlier stages' fixed)")
    train_loss: float | None = None
    val_loss: float | None = None
    gap: float | None = None
    train_acc: float | None = None
    val_acc: float | None = None
    sparsity: float | None = None
    features_kept: int | None = None
    epochs: int | None = None
    seconds: float | None = None
    best_epoch: int | None = None
    fail_reason: str | None = None
    interrupted: bool = False
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None
    train_curve: list[float | None] | None = Field(
        default=None, description="with ?curves=true, where the job's search.train_curve is on")
    val_curve: list[float | None] | None = Field(default=None, description="with ?curves=true")


class TrialsPublic(BaseModel):
    items: list[TrialPublic]
    count: int


class Health(BaseModel):
    status: str = Field(description="ok")
    database: str = Field(description="ok when the database answered")


class Ready(BaseModel):
    status: str = Field(description="ready")
    queued: int = Field(description="jobs waiting for a runner")
    runners: int = Field(description="runners seen lately (REGTUNE_RUNNER_SEEN_SECONDS)")


class FactoryPublic(BaseModel):
    name: str = Field(description="what model.factory names: 'file:function' (REGTUNE_MODELS_DIR) or an entry point")
    source: str = Field(description="file (REGTUNE_MODELS_DIR) or entry_point (group regtune.models)")
    doc: str = Field(description="the first line of the factory's docstring")
    error: str | None = Field(default=None, description="why the file or entry point could not be loaded")


class ColumnPublic(BaseModel):
    name: str
    dtype: str = Field(description="boolean | integer | float | string: the widest its values need; empty when "
                                   "every value is missing")
    missing: int = Field(description="values that are empty, NaN, NA, null or none")


class ImagesPublic(BaseModel):
    classes: dict[str, int] = Field(description="the images of each class (a class is a folder's name)")
    sizes: list[list[int]] = Field(description="the distinct [height, width] of the images, the most common "
                                               "first (at most 10)")


class DatasetPublic(BaseModel):
    """An uploaded file as read on upload; ``id`` is what a spec names (``dataset: {source: upload, id}``)."""

    id: str = Field(description="the sha256 of the bytes: the same file always has the same id")
    format: str = Field(description="csv | npz | parquet | zip (a folder of images, one subfolder per class)")
    bytes: int
    sha256: str
    rows: int
    columns: list[ColumnPublic] | None = Field(default=None, description="a table's columns")
    shape: dict[str, list[int]] | None = Field(default=None, description="an npz: each array's shape; a zip of "
                                               "images: X, [images, channels, height, width] as read by default "
                                               "(when the images share one size)")
    images: ImagesPublic | None = Field(default=None, description="a zip of images: its classes and sizes")
