"""The report: baseline vs chosen, how sure, the Pareto front, importances, features, a diagnosis.

Test metrics are measured here, once, for the baseline and the chosen
configuration only; nothing before this module reads the test split.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import optuna
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial

from tuner.knobs import knob_of
from tuner.report._candidates import Candidate, choose, one_se_extras, retrain_candidates, top_configs
from tuner.report._markdown import diagnose
from tuner.report._model import (
    CandidateSummary,
    ChosenRun,
    Curves,
    FeatureSummary,
    LearningCurve,
    ParetoPoint,
    Report,
    RunSummary,
    SeedSummary,
    StageSummary,
    Task,
)
from tuner.search import StageOutcome, complete_trials
from tuner.spec import JobSpec
from tuner.train import Dataset, TrainResult, evaluate

__all__ = ["build_report", "pareto_front"]


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points not dominated in (val_loss, gap), both to be minimized, sorted by val loss."""
    front = [p for p in points if not any(
        q["val_loss"] <= p["val_loss"] and q["gap"] <= p["gap"]
        and (q["val_loss"] < p["val_loss"] or q["gap"] < p["gap"]) for q in points)]
    return sorted(front, key=lambda p: p["val_loss"])


def _searched(config: dict[str, float], spec: JobSpec) -> dict[str, float]:
    """The knobs of a configuration that the spec searches (others are always 0)."""
    knobs = spec.search.space.ranges()
    return {k: v for k, v in config.items() if knob_of(k) in knobs}


def _measure(spec: JobSpec, run: TrainResult, data: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {"train_loss": run.train_loss, "val_loss": run.val_loss, "gap": run.gap,
                           "epochs": run.epochs, "sparsity": run.sparsity, "features_kept": run.features_kept}
    if run.train_acc is not None:
        out |= {"train_acc": run.train_acc, "val_acc": run.val_acc}
    assert data.test is not None and run.model is not None
    test_loss, test_acc = evaluate(run.model, data.test, data.task)
    out["test_loss"] = test_loss
    if data.task == "classification":
        out["test_acc"] = test_acc
    else:
        out["test_rmse"] = math.sqrt(test_loss) * data.target_scale
    return out


def _importances(spec: JobSpec, trials: list[FrozenTrial]) -> dict[str, float]:
    """fANOVA importances of the knobs for the val loss, over every trial of every stage."""
    ranges = spec.search.space.ranges()
    names = sorted({k for t in trials for k in _searched(t.user_attrs.get("config", {}), spec)})
    varying = [k for k in names if len({t.user_attrs["config"].get(k, 0.0) for t in trials}) > 1]
    if len(varying) == 1:
        return {varying[0]: 1.0}
    if len(varying) < 2 or len(trials) < 4:
        return {}
    dists: dict[str, FloatDistribution] = {}
    for k in varying:
        rng = ranges[knob_of(k)]
        dists[k] = (FloatDistribution(math.log10(rng.low) - 1, math.log10(rng.high)) if rng.log
                    else FloatDistribution(min(0.0, rng.low), rng.high))

    def encode(k: str, v: float) -> float:
        """Log knobs on a log10 axis, with 0 (off) one decade below ``low``."""
        d, log = dists[k], ranges[knob_of(k)].log
        x = (math.log10(v) if v > 0 else d.low) if log else v
        return min(max(x, d.low), d.high)

    study = optuna.create_study()
    for t in trials:
        cfg = t.user_attrs["config"]
        study.add_trial(optuna.trial.create_trial(
            params={k: encode(k, cfg.get(k, 0.0)) for k in varying}, distributions=dict(dists),
            value=float(t.user_attrs["val_loss"])))
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=spec.seed))
    except (RuntimeError, ValueError):
        return {}
    return {k: round(float(v), 4) for k, v in imp.items()}


def _features(spec: JobSpec, data: Dataset, chosen: TrainResult) -> FeatureSummary | None:
    if spec.search.space.l1 is None:
        return None
    kept = [n for n, keep in zip(data.feature_names, chosen.features_mask, strict=True) if keep]
    removed = [n for n, keep in zip(data.feature_names, chosen.features_mask, strict=True) if not keep]
    out: dict[str, Any] = {"kept": kept, "removed": removed}
    if data.informative:  # synthetic data knows which features matter
        info = set(data.informative)
        out["informative_kept"] = sum(n in info for n in kept)
        out["informative_total"] = len(info)
        out["noise_removed"] = sum(n not in info for n in removed)
        out["noise_total"] = data.n_features - len(info)
    return FeatureSummary(**out)


def _stage_summary(spec: JobSpec, outcome: StageOutcome) -> StageSummary:
    best = outcome.best
    return StageSummary(
        name=outcome.name, study_name=outcome.study_name, trials=outcome.trials,
        best_trial=best.number if best else None,
        best_value=(best.values[0] if len(best.values) == 1 else best.values) if best and best.values else None,
        best_params=_searched(best.user_attrs.get("config", {}), spec) if best else {},
        fixes=outcome.fixed,
    )


def _candidate_summary(spec: JobSpec, c: Candidate) -> CandidateSummary:
    return CandidateSummary(stage=c.stage, trial=c.trial, params=_searched(c.config, spec),
                            val_loss_mean=c.mean, val_loss_std=c.std, val_loss_se=c.se, n=len(c.runs),
                            val_losses=c.val_losses)


def _seeds(c: Candidate) -> SeedSummary:
    return SeedSummary(n=len(c.runs), val_loss_mean=c.mean, val_loss_std=c.std)


def _curve(run: TrainResult) -> LearningCurve:
    return LearningCurve(train=run.curve_train, val=run.curve_val)


def _constant_loss(data: Dataset) -> float:
    """The training loss of the best constant prediction: the class prior's entropy, or the variance."""
    y = data.train.y
    if data.task == "classification":
        p = torch.bincount(y).float() / len(y)
        p = p[p > 0]
        return float(-(p * p.log()).sum())
    return float(y.var(unbiased=False))


def build_report(spec: JobSpec, data: Dataset, outcomes: list[StageOutcome],
                 should_stop: Callable[[], bool] | None = None) -> Report:
    """Re-train the final candidates, choose, and measure the test split once.

    Returns:
        The report; ``report.model_dump_json()`` is ``report.json``.
    """
    search_data = data.without_test()
    baseline_outcome = outcomes[0]
    last = outcomes[-1]
    top = top_configs(spec, complete_trials(last.study), spec.report.top_k) if last is not baseline_outcome else []
    base_trial = baseline_outcome.best
    picks: list[tuple[str, int | None, dict[str, float]]] = [
        (baseline_outcome.name, base_trial.number if base_trial else None,
         base_trial.user_attrs["config"] if base_trial else {})]
    picks += [(last.name, t.number, t.user_attrs["config"]) for t in top
              if t.user_attrs["config"] != picks[0][2]]
    candidates = retrain_candidates(spec, search_data, picks, should_stop)
    if spec.report.choose == "one_se" and top:
        extras = one_se_extras(spec, complete_trials(last.study), candidates, spec.report.top_k)
        candidates += retrain_candidates(spec, search_data, [(last.name, t.number, t.user_attrs["config"])
                                                             for t in extras], should_stop)
    chosen = choose(spec, candidates)
    baseline = candidates[0]
    all_trials = [t for o in outcomes for t in complete_trials(o.study)]
    points = [{"stage": t.user_attrs.get("stage"), "trial": t.number,
               "params": _searched(t.user_attrs.get("config", {}), spec),
               "val_loss": t.user_attrs["val_loss"], "gap": t.user_attrs["gap"]}
              for t in all_trials if "val_loss" in t.user_attrs]
    baseline_row = RunSummary(params={}, **_measure(spec, baseline.first, data), seeds=_seeds(baseline))
    loss_units = None
    if data.task == "regression":
        loss_units = "mean squared error of the standardized target" if spec.dataset.standardize \
            else "mean squared error"
    return Report(
        job=spec.name,
        task=cast(Task, data.task),  # the loader knows only these two
        baseline=baseline_row,
        chosen=ChosenRun(stage=chosen.stage, trial=chosen.trial, params=_searched(chosen.config, spec),
                         **_measure(spec, chosen.first, data), seeds=_seeds(chosen)),
        choose=spec.report.choose,
        candidates=[_candidate_summary(spec, c) for c in candidates],
        stages=[_stage_summary(spec, o) for o in outcomes],
        pareto=[ParetoPoint(**p) for p in pareto_front(points)],
        importances=_importances(spec, all_trials),
        curves=Curves(baseline=_curve(baseline.first), chosen=_curve(chosen.first)),
        loss_units=loss_units,
        features=_features(spec, data, chosen.first),
        diagnosis=diagnose(baseline_row, _constant_loss(data)),
    )
