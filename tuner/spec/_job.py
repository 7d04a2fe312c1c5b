"""The job spec: the one contract between the CLI, the API and the runner."""

from __future__ import annotations

from pydantic import Field

from tuner.spec._base import Strict
from tuner.spec._data import DatasetSpec
from tuner.spec._models import ModelSpec, ReportSpec, SearchSpec, StageSpec, TrainingSpec
from tuner.spec._stages import complete_stages

__all__ = ["JobSpec"]


class JobSpec(Strict):
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
        """The stages in the order they run: the spec's own once parsed (``complete`` filled them in)."""
        return complete_stages(self.search)

    @property
    def task(self) -> str | None:
        return self.dataset.known_task
