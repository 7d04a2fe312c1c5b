"""The service's settings, read from ``REGTUNE_*`` environment variables (names fixed by DESIGN.md)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["LOCAL_HOSTS", "Settings", "get_settings"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_CHARS = 16  # a secret anyone could guess in a few thousand tries is no secret


class Settings(BaseSettings):
    """Everything the API and the runners read from the environment.

    The ``max_*`` limits bound what one job spec may ask for; a spec over a limit is
    refused with 422 naming the limit, before anything is queued.
    """

    model_config = SettingsConfigDict(env_prefix="REGTUNE_", extra="ignore", frozen=True)

    database_url: str = Field(default="sqlite:///regtune.db", min_length=1,
                              description="one database for the jobs table and Optuna's tables")
    api_token: SecretStr | None = Field(default=None, description="Bearer token; unset means local use only")
    admin_token: SecretStr | None = Field(default=None, description="a second token that may also write through "
                                          "the dashboard's API; unset: the dashboard is read-only for everyone")
    session_secret: SecretStr | None = Field(default=None, description="signs the login page's session cookies; "
                                             "unset: derived from the tokens (a new token logs everyone out)")
    session_seconds: int = Field(default=12 * 3600, ge=60, description="how long a browser stays logged in")
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Host names the service answers to, comma-separated; unset: the loopback names "
        "without a token, any with one")
    runner_seen_seconds: float = Field(default=120.0, gt=0, description="/readyz: a runner not seen for this "
                                       "long counts as gone")
    data_dir: Path = Field(default=Path("data"), description="where CSV paths in a spec are resolved (never the "
                           "working directory: it holds .env files and databases)")
    lease_seconds: float = Field(default=60.0, gt=0, description="how long a runner's claim on a job lasts")
    heartbeat_seconds: float = Field(default=10.0, gt=0, description="how often a runner renews its lease")
    stall_seconds: float = Field(default=600.0, gt=0, allow_inf_nan=False, description="how long a job may "
                                 "make no progress (no epoch, no batch, no trial) before its runner stops renewing "
                                 "its lease, so that another runner takes it back")
    poll_seconds: float = Field(default=1.0, gt=0, description="how often an idle runner looks for work")
    max_attempts: int = Field(default=3, ge=1, description="runners a job may lose before it fails")
    max_trials: int = Field(default=1000, ge=1, description="trials one job may ask for, all stages together")
    max_epochs: int = Field(default=1000, ge=1, description="training.epochs one job may ask for")
    max_hidden_units: int = Field(default=8192, ge=1, description="model size: the sum of the hidden widths")
    max_grid_points: int = Field(default=10_000, ge=1, description="grid points of one stage under the grid "
                                 "sampler (the product over its knobs, a per-layer knob once per layer)")
    max_data_cells: int = Field(default=10_000_000, ge=1, description="dataset rows × columns; at submit for "
                                "generated data, at load for files")
    max_work: float = Field(default=1e11, gt=0, allow_inf_nan=False, description="a job's work estimate, in "
                            "parameter-steps: trainings (retries and seed re-runs counted) × epochs × steps × "
                            "parameters")
    max_job_seconds: float = Field(default=86_400.0, gt=0, allow_inf_nan=False, description="how long a runner "
                                   "lets one job run before it fails it")
    max_parallelism: int | None = Field(default=None, ge=1, description="trials at once; unset means the "
                                        "runner's CPU count")
    allow_ray: bool = Field(default=False, description="whether a spec may ask for backend 'ray' (a Ray cluster)")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="largest request body accepted (a "
                                "dataset's upload excepted: REGTUNE_MAX_UPLOAD_BYTES)")
    max_upload_bytes: int = Field(default=200 * 2**20, ge=1, description="largest dataset POST /datasets "
                                  "accepts, checked as it streams in")
    max_upload_files: int = Field(default=100_000, ge=1, description="members an uploaded zip of images may "
                                  "hold (folders and skipped files counted)")
    max_unpacked_bytes: int = Field(default=2 * 2**30, ge=1, description="bytes an uploaded zip of images may "
                                    "unpack to, all members together")
    api_threads: int = Field(default=4, ge=1, le=256, description="threads serving the API's handlers; few "
                             "beat many, as Python threads take turns on one interpreter lock")

    @field_validator("api_token", "admin_token", "session_secret", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_token", "admin_token", "session_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters long, but got "
                             f"{len(value.get_secret_value())} (make one: python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))')")
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Self:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                "REGTUNE_HEARTBEAT_SECONDS < REGTUNE_LEASE_SECONDS must hold (a lease must be renewed before "
                f"it expires), but got (heartbeat={self.heartbeat_seconds}, lease={self.lease_seconds})"
            )
        if self.admin_token is not None and self.admin_token == self.api_token:
            raise ValueError("REGTUNE_ADMIN_TOKEN must differ from REGTUNE_API_TOKEN (the admin token may write "
                             "through the dashboard; the API token may not)")
        return self

    def token(self) -> str | None:
        """The API token in clear, or None when the service runs without one."""
        return self.api_token.get_secret_value() if self.api_token is not None else None


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    return Settings()
