"""The report as a typed model: ``report.json``, ``GET /jobs/{id}/report`` and every reader share it.

The fields follow DESIGN.md's report. A few exist for one kind of job only
(``test_acc`` for classification, ``test_rmse`` and ``loss_units`` for
regression, ``features`` when L1 was searched): they are None otherwise and
left out of the JSON, as a key that is absent, not a null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CandidateSummary",
    "ChosenRun",
    "Curves",
    "FeatureSummary",
    "LearningCurve",
    "ParetoPoint",
    "Report",
    "RunSummary",
    "SeedSummary",
    "StageSummary",
    "Task",
]

Task = Literal["classification", "regression"]


def _absent(value: Any) -> bool:
    return value is None


def _only_for(description: str) -> Any:
    """A field that one kind of job has: None, and left out of the JSON, for the others."""
    return Field(default=None, exclude_if=_absent, description=description)


class _Part(BaseModel):
    # Unknown keys are an error, never dropped: a stored report that does not fit is noticed.
    model_config = ConfigDict(extra="forbid")


class SeedSummary(_Part):
    """The configuration trained again with other seeds: how much its val loss depends on the seed."""

    n: int = Field(description="runs: the job's own seed and `report.seeds` others")
    val_loss_mean: float = Field(description="mean val loss over the runs; the choice is made on it")
    val_loss_std: float = Field(description="standard deviation of the val loss over the runs (0 for one run)")


class RunSummary(_Part):
    """One configuration as re-trained with the job's seed, measured on every split, the test split once."""

    params: dict[str, float] = Field(description="the searched knobs and their values (0: off); the baseline's is "
                                                 "empty")
    train_loss: float = Field(description="plain loss on the training split, in eval mode (no penalty, no "
                                          "smoothing)")
    val_loss: float = Field(description="plain loss on the validation split")
    gap: float = Field(description="val_loss - train_loss: how much the model overfits")
    epochs: int = Field(description="epochs trained (early stopping may end sooner)")
    sparsity: float = Field(description="fraction of the weights exactly zero")
    features_kept: int = Field(description="input features with any non-zero weight")
    train_acc: float | None = _only_for("accuracy on the training split (classification only)")
    val_acc: float | None = _only_for("accuracy on the validation split (classification only)")
    test_loss: float = Field(description="plain loss on the held-out test split, measured once, for the report")
    test_acc: float | None = _only_for("accuracy on the test split (classification only)")
    test_rmse: float | None = _only_for("root mean squared error on the test split, in the target's own units "
                                        "(regression only)")
    seeds: SeedSummary = Field(description="the same configuration over several seeds")

    @property
    def test_metric(self) -> tuple[str, float | None]:
        """``("test_acc", …)`` for classification, ``("test_rmse", …)`` for regression."""
        return ("test_acc", self.test_acc) if self.test_acc is not None else ("test_rmse", self.test_rmse)


class _Pick(_Part):
    stage: str = Field(description="the stage whose trial this configuration came from")
    trial: int | None = Field(description="the trial's number in that stage's study")


class ChosenRun(RunSummary, _Pick):
    """The configuration regtune recommends (``choose``'s rule over the candidates)."""


class CandidateSummary(_Pick):
    """A final candidate: one of the best configurations (or the baseline), re-trained over seeds."""

    params: dict[str, float] = Field(description="the searched knobs and their values")
    val_loss_mean: float = Field(description="mean val loss over the seeds")
    val_loss_std: float = Field(description="standard deviation of the val loss over the seeds")
    val_loss_se: float = Field(description="standard error of the mean val loss: the spread over seeds and the "
                                           "val split's own sampling noise together (the one_se rule uses it)")
    n: int = Field(description="runs: the job's own seed and `report.seeds` others")
    val_losses: list[float] = Field(description="the val loss of each run, the job's own seed first")


class StageSummary(_Part):
    """A finished stage: its Optuna study and its best trial."""

    name: str = Field(description="the stage's name in the spec")
    study_name: str = Field(description="the real name of the stage's Optuna study (`<name>/<stage>` from "
                                        "`regtune run`, `<name>-<job id>/<stage>` from the service)")
    trials: int = Field(description="trials completed in the stage's study (pruned and failed ones not counted)")
    best_trial: int | None = Field(description="the number of its best completed trial by the objective")
    best_value: float | list[float] | None = Field(
        description="the best trial's objective value; a pair for a Pareto objective")
    best_params: dict[str, float] = Field(description="the best trial's searched knobs and their values")
    fixes: dict[str, float] = Field(description="the knob values this stage fixes for the stages after it: its "
                                                "knobs at the best over its own and the earlier stages' trials (a "
                                                "knob that did not help stays as it was, 0 after the baseline)")


class ParetoPoint(_Part):
    """A completed trial that no other beats on both val loss and gap."""

    stage: str | None = Field(description="the stage the trial ran in")
    trial: int = Field(description="the trial's number in its stage's study")
    params: dict[str, float] = Field(description="the trial's searched knobs and their values")
    val_loss: float = Field(description="the trial's val loss")
    gap: float = Field(description="the trial's val loss - train loss")


class LearningCurve(_Part):
    """Plain losses per epoch of one run."""

    train: list[float] = Field(description="train loss per epoch")
    val: list[float] = Field(description="val loss per epoch")


class Curves(_Part):
    """Learning curves of the baseline and of the chosen configuration (the job's own seed)."""

    baseline: LearningCurve = Field(description="the run without regularization")
    chosen: LearningCurve = Field(description="the chosen configuration's run")


class FeatureSummary(_Part):
    """Which input features the chosen model still uses; the names are the dataset's own."""

    kept: list[str] = Field(description="input features with any non-zero weight")
    removed: list[str] = Field(description="features whose weights L1 drove to exactly zero")
    informative_kept: int | None = _only_for("informative features kept (synthetic data only, which knows them)")
    informative_total: int | None = _only_for("informative features in the data (synthetic data only)")
    noise_removed: int | None = _only_for("noise features removed (synthetic data only)")
    noise_total: int | None = _only_for("noise features in the data (synthetic data only)")


class Report(_Part):
    """A finished job's answer: is there overfitting, which setting trades fit for generalization best, how sure."""

    job: str = Field(description="the job spec's name")
    task: Task = Field(description="the dataset's task")
    baseline: RunSummary = Field(description="the model without regularization (stage `baseline`)")
    chosen: ChosenRun = Field(description="the recommended configuration")
    choose: Literal["best", "one_se"] = Field(
        description="the rule of the choice: best (lowest mean val loss over seeds) or one_se (the most "
                    "regularized candidate within one standard error of the best)")
    candidates: list[CandidateSummary] = Field(
        description="the configurations re-trained over seeds before the choice; the baseline first")
    stages: list[StageSummary] = Field(description="every stage, in the order they ran")
    pareto: list[ParetoPoint] = Field(description="the Pareto front of every completed trial in (val loss, gap), "
                                                  "both minimized, sorted by val loss")
    importances: dict[str, float] = Field(
        description="fANOVA importance of each knob that varied for the val loss, over every trial (sums to 1); "
                    "empty when no knob varied, or fewer than 4 trials ran with two knobs or more varying")
    curves: Curves = Field(description="learning curves of the baseline and the chosen run")
    loss_units: str | None = _only_for("what the losses measure (regression only: mean squared error, of the "
                                       "standardized target when `dataset.standardize`)")
    features: FeatureSummary | None = _only_for("features kept and removed by the chosen model (when L1 was "
                                                "searched)")
    diagnosis: str = Field(description="overfitting | no_overfitting | underfitting, then one sentence why, read "
                                       "from the baseline")
