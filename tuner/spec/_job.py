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

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="a human label; it names the stages' Optuna studies (`<name>/<stage>`); the "
                                  "service assigns the job id")
    seed: int = Field(default=0, ge=0, le=2**31 - 1,
                      description="seeds the data split, the weights, the samplers; the final candidates are "
                                  "re-trained with this seed and `report.seeds` others")
    dataset: DatasetSpec = Field(description="where the data comes from and how it is split")
    model: ModelSpec = Field(default_factory=ModelSpec, description="the torch model trained in every trial")
    training: TrainingSpec = Field(default_factory=TrainingSpec,
                                   description="how each trial trains: epochs, batches, optimizer, early stopping")
    search: SearchSpec = Field(default_factory=SearchSpec,
                               description="what is searched and how: the knobs' priors, the stages, the sampler, "
                                           "the pruner, the objective, the backend")
    report: ReportSpec = Field(default_factory=ReportSpec,
                               description="how the final configuration is chosen: candidates re-trained over "
                                           "seeds, and the rule")

    @property
    def stages(self) -> list[StageSpec]:
        """The stages in the order they run: the spec's own once parsed (``complete`` filled them in)."""
        return complete_stages(self.search)

    @property
    def task(self) -> str | None:
        return self.dataset.known_task
