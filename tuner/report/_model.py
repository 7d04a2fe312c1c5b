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
    "BoundHit",
    "CandidateSummary",
    "ChosenRun",
    "Curves",
    "EpochGap",
    "FeatureStability",
    "FeatureSummary",
    "LambdaMaxSearch",
    "LearningCurve",
    "ParetoChoice",
    "ParetoPoint",
    "PathPoint",
    "Preprocessing",
    "Refit",
    "Report",
    "RunSummary",
    "SeedSummary",
    "StageCost",
    "StageSummary",
    "TableColumn",
    "Task",
    "Validation",
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


class Refit(_Part):
    """With cross-validation: the model whose test score is reported, refit on every non-test row."""

    rows: int = Field(description="the non-test rows it trained on")
    epochs: int = Field(description="epochs trained: the folds' mean best epoch (no validation rows are left)")


class EpochGap(_Part):
    """The losses at one epoch of the baseline's learning curves."""

    epoch: int = Field(description="the epoch, from 1")
    train_loss: float = Field(description="plain train loss at that epoch")
    val_loss: float = Field(description="plain val loss at that epoch")
    gap: float = Field(description="val_loss - train_loss at that epoch")


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
    features_kept: int = Field(description="input features with any non-zero weight (a table's columns: a "
                                           "category counts once, kept when any of its levels is)")
    train_acc: float | None = _only_for("accuracy on the training split (classification only)")
    val_acc: float | None = _only_for("accuracy on the validation split (classification only)")
    val_loss_se: float | None = _only_for("with cross-validation: the standard error of val_loss over the folds")
    fold_val_losses: list[float] | None = _only_for("with cross-validation: the val loss of each fold")
    refit: Refit | None = _only_for("with cross-validation: the refit on every non-test row that the test "
                                    "scores and sparsity come from")
    test_loss: float = Field(description="plain loss on the held-out test split, measured once, for the report")
    test_acc: float | None = _only_for("accuracy on the test split (classification only)")
    test_rmse: float | None = _only_for("root mean squared error on the test split, in the target's own units "
                                        "(regression only)")
    best_epoch: EpochGap | None = _only_for("the baseline only: the epoch of lowest val loss (early stopping "
                                            "keeps that model)")
    last_epoch: EpochGap | None = _only_for("the baseline only: the last epoch trained; a gap larger than at "
                                            "best_epoch is overfitting that early stopping hides")
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


class LambdaMaxSearch(_Part):
    """How an L1 path found λ_max, the smallest λ₁ that removes every input (fits outside the trials)."""

    gradient: float = Field(description="the first guess: the largest loss gradient of an input weight at zero")
    fits: int = Field(description="training runs spent checking and bisecting it")
    method: Literal["gradient", "bisection"] = Field(description="gradient: the guess held; bisection: it was "
                                                                 "searched")


class StageSummary(_Part):
    """A finished stage: its Optuna study and its best trial."""

    name: str = Field(description="the stage's name in the spec")
    study_name: str = Field(description="the real name of the stage's Optuna study (`<name>/<stage>` from "
                                        "`regtune run`, `<name>-<job id>/<stage>` from the service)")
    trials: int = Field(description="trials that reached a verdict (COMPLETE or PRUNED): what the budget counts")
    budget: int = Field(description="the stage's trial budget (`trials` in its spec)")
    completed: int = Field(description="trials COMPLETE")
    pruned: int = Field(description="trials PRUNED")
    failed: int = Field(description="trials FAIL (a NaN loss, a crash, an interrupted run); not in the budget")
    best_trial: int | None = Field(description="the number of its best completed trial by the objective")
    best_value: float | list[float] | None = Field(
        description="the best trial's objective value; a pair for a Pareto objective")
    best_params: dict[str, float] = Field(description="the best trial's searched knobs and their values")
    fixes: dict[str, float] = Field(description="the knob values this stage fixes for the stages after it: its "
                                                "knobs at the best over its own and the earlier stages' trials (a "
                                                "knob that did not help stays as it was, 0 after the baseline)")
    l1_max: float | None = _only_for("an L1 path stage: λ_max, where its walk started")
    l1_max_found: LambdaMaxSearch | None = _only_for("an L1 path stage: how λ_max was found")


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


class PathPoint(_Part):
    """One point of the L1 path (a completed trial of a path stage)."""

    l1: float = Field(description="λ₁ at this point")
    val_loss: float = Field(description="the point's val loss")
    val_loss_se: float = Field(description="its standard error (over the folds, or 0 without them)")
    features_kept: int = Field(description="input features with any non-zero weight (a table's columns: a "
                                           "category counts once, kept when any of its levels is)")
    kept: list[str] = Field(description="their names (a table's columns, before one-hot encoding)")
    stage: str | None = Field(description="the path stage")
    trial: int = Field(description="the trial's number in that stage's study")


class Validation(_Part):
    """How val losses were measured when it was not one validation split."""

    method: Literal["cross-validation"] = Field(description="cross-validation over folds of the non-test rows")
    folds: int = Field(description="folds")
    rows: int = Field(description="the non-test rows the folds split")
    note: str = Field(description="the same in a sentence, with the refit before the test score")


class BoundHit(_Part):
    """A chosen knob value in the outer 5% of the range it was searched in: the best may lie beyond it."""

    param: str = Field(description="the knob (dropout_<i> for one layer of a per-layer dropout)")
    value: float = Field(description="its chosen value")
    low: float = Field(description="the range's lower end")
    high: float = Field(description="the range's upper end")
    edge: Literal["low", "high"] = Field(description="which end it sits at")
    range: str = Field(description="where the range comes from: search.space.<knob>, or the L1 path")
    message: str = Field(description="the same in a sentence, with a wider range to try")


class ParetoChoice(_Part):
    """With two objectives: where the chosen configuration sits on the (val loss, gap) front, and why."""

    on_front: bool = Field(description="whether the chosen trial is on the front")
    rank: int | None = Field(default=None, description="its place on the front counted from the lowest val loss; "
                                                       "null when it is behind the front")
    front_size: int | None = _only_for("points on the front")
    val_loss: float | None = _only_for("the chosen trial's val loss")
    gap: float | None = _only_for("the chosen trial's gap")
    why: str = Field(description="the reason in a sentence")


class StageCost(_Part):
    """The bill of one stage, of the re-training over seeds, of the refits, or their total."""

    stage: str = Field(description="a stage's name, 're-training over seeds', 'refit on all non-test rows', or "
                                   "'total'")
    trials: int = Field(description="runs started")
    complete: int = Field(description="runs completed")
    pruned: int = Field(description="runs pruned")
    failed: int = Field(description="runs failed")
    epochs_run: int = Field(description="epochs trained, all runs together")
    epochs_budgeted: int = Field(description="epochs had every run trained its full budget")
    epochs_saved_by_pruning: int = Field(description="epochs pruned runs did not train")
    epochs_saved_by_early_stopping: int = Field(description="epochs completed runs did not train")
    seconds: float = Field(description="wall seconds of the runs, summed (parallel runs overlap)")


class FeatureStability(_Part):
    """An input feature kept by any seed's run of the chosen configuration."""

    name: str = Field(description="the feature's name")
    seeds: int = Field(description="the runs that kept it")
    share: float = Field(description="the share of runs that kept it")


class TableColumn(_Part):
    """One feature column of a table, and what was done to it before training."""

    name: str = Field(description="the column's name in the file")
    kind: Literal["number", "category"] = Field(description="number (imputed, then scaled with "
                                                            "`dataset.standardize`) or category (text or "
                                                            "boolean: imputed, then one-hot)")
    imputed: int = Field(description="values missing in the file (every split), each filled with `fill`")
    fill: float | str = Field(description="what a missing value became: the training split's median (a number) or "
                                          "most frequent level (a category)")
    one_hot: int | None = _only_for("a category: the one-hot columns it became (its `other` column included)")
    levels: list[str] | None = _only_for("a category: the levels with a column of their own (a level unseen in "
                                         "training goes to `other`, or to no column when there is none)")
    other_levels: int | None = _only_for("a category: the training split's levels too rare for a column of "
                                         "their own, together in one `other` column (0: none)")


class Preprocessing(_Part):
    """A table with text categories or missing values: imputed, one-hot and scaled before training."""

    fitted_on: int = Field(description="the training rows the medians, levels and scaling were fitted on (never a "
                                       "val or test row; with folds, every non-test row)")
    max_levels: int = Field(description="the most one-hot columns a category becomes (`dataset.max_levels`)")
    standardized: bool = Field(description="whether number columns were scaled to mean 0, std 1 "
                                           "(`dataset.standardize`); one-hot columns stay 0/1")
    columns: list[TableColumn] = Field(description="every feature column, in the file's order")
    inputs: int = Field(description="the model's inputs after one-hot encoding")


class FeatureSummary(_Part):
    """Which input features the chosen model still uses; the names are the dataset's own."""

    kept: list[str] = Field(description="input features with any non-zero weight (a table's columns: a category "
                                        "is kept when any of its levels is)")
    removed: list[str] = Field(description="features whose weights L1 drove to exactly zero (every level of a "
                                           "category)")
    informative_kept: int | None = _only_for("informative features kept (synthetic data only, which knows them)")
    informative_total: int | None = _only_for("informative features in the data (synthetic data only)")
    noise_removed: int | None = _only_for("noise features removed (synthetic data only)")
    noise_total: int | None = _only_for("noise features in the data (synthetic data only)")
    stability: list[FeatureStability] = Field(description="the features any seed's run kept, most stable first")
    seeds: int = Field(description="the chosen configuration's runs (the job's seed and the others)")


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
    classes: list[str | int | float] | None = _only_for("classification: the class labels as the data has "
                                                          "them (text stays text); output i is classes[i]")
    preprocessing: Preprocessing | None = _only_for("a table with text categories or missing values: what was "
                                                    "imputed, one-hot encoded and scaled, per column")
    loss_units: str | None = _only_for("what the losses measure (regression only: mean squared error, of the "
                                       "standardized target when `dataset.standardize`)")
    l1_path: list[PathPoint] | None = _only_for("the L1 path's points, strongest λ₁ first (when a stage walked it)")
    validation: Validation | None = _only_for("how val losses were measured (with `split.folds` only)")
    bound_hits: list[BoundHit] = Field(description="chosen knob values at the edge of their range; empty when none")
    pareto_choice: ParetoChoice | None = _only_for("with two objectives: the choice's place on the front, and why")
    cost: list[StageCost] = Field(description="what the search cost: one row per stage, the re-training over "
                                              "seeds (and the refits), then the total")
    dropout_layers: dict[str, str] | None = _only_for("a module or cnn model with per-layer dropout: each knob "
                                                      "(dropout_<i>) and the dropout module it sets, in "
                                                      "named_modules() order")
    features: FeatureSummary | None = _only_for("features kept and removed by the chosen model (when L1 was "
                                                "searched)")
    diagnosis: str = Field(description="overfitting | no_overfitting | underfitting, then one sentence why, read "
                                       "from the baseline")
    device: str | None = _only_for("the device the job trained on (training.device resolved: cpu, cuda:0, mps)")
