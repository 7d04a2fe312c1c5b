"""The report: baseline vs chosen, how sure, the Pareto front, importances, features, a diagnosis.

Test metrics are measured here, once, for the baseline and the chosen
configuration only; nothing before this module reads the test split.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial

from tuner.knobs import Knobs, knob_of
from tuner.pareto import pareto_front
from tuner.report._candidates import Candidate, choose, one_se_extras, retrain_candidates, top_configs
from tuner.report._cost import retrain_cost, stage_cost, total_cost
from tuner.report._explain import bound_hits, pareto_choice, stable_features
from tuner.report._markdown import diagnose
from tuner.report._model import Report, RunSummary
from tuner.search import StageOutcome, TrialCount, complete_trials, one_se_point, path_summary
from tuner.spec import JobSpec
from tuner.train import Dataset, TablePrep, TrainResult, evaluate, export_model, refit

__all__ = ["build_report"]


def _searched(config: dict[str, float], spec: JobSpec) -> dict[str, float]:
    """The knobs of a configuration that the spec searches (others are always 0)."""
    knobs = spec.search.space.ranges()
    return {k: v for k, v in config.items() if knob_of(k) in knobs}


def _final(spec: JobSpec, data: Dataset, cand: Candidate,
           should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """The model whose test score is reported: the candidate's own run, or with folds a refit on every non-test row.

    A cross-validated run has one model per fold and none for all the data; the
    refit trains for the folds' mean best epoch, as no validation rows are left.
    """
    if not data.folds:
        return cand.first
    knobs = Knobs.from_params(cand.config, spec.model.dropout_slots)
    return refit(data, spec.model, spec.training, knobs, spec.seed, cand.first.best_epoch, should_stop)


def _measure(spec: JobSpec, run: TrainResult, data: Dataset, fitted: TrainResult) -> dict[str, Any]:
    """Train/val measures of ``run`` and the one test score of ``fitted`` (the same run without folds)."""
    out: dict[str, Any] = {"train_loss": run.train_loss, "val_loss": run.val_loss, "gap": run.gap,
                           "epochs": run.epochs, "sparsity": fitted.sparsity,
                           "features_kept": sum(data.columns_kept(fitted.features_mask))}
    if run.train_acc is not None:
        out |= {"train_acc": run.train_acc, "val_acc": run.val_acc}
    if run.val_loss_se is not None:
        out["val_loss_se"] = run.val_loss_se
        out["fold_val_losses"] = run.fold_val_losses
    if fitted is not run:
        out["refit"] = {"rows": len(data.train), "epochs": fitted.epochs}
    assert data.test is not None and fitted.model is not None
    test_loss, test_acc = evaluate(fitted.model, data.test, data.task)
    out["test_loss"] = test_loss
    if data.task == "classification":
        out["test_acc"] = test_acc
    else:
        out["test_rmse"] = math.sqrt(test_loss) * data.target_scale
    return out


def _epoch_gaps(run: TrainResult) -> dict[str, Any]:
    """The gap at the epoch of lowest val loss and at the last epoch trained, from the learning curves.

    Early stopping is itself a regularizer: the kept model's gap hides how far
    training would have overfit had it gone on.
    """
    if not run.curve_val:
        return {}
    best = min(range(len(run.curve_val)), key=run.curve_val.__getitem__)
    last = len(run.curve_val) - 1

    def at(i: int) -> dict[str, Any]:
        return {"epoch": i + 1, "train_loss": run.curve_train[i], "val_loss": run.curve_val[i],
                "gap": run.curve_val[i] - run.curve_train[i]}

    return {"best_epoch": at(best), "last_epoch": at(last)}


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


def _features(spec: JobSpec, data: Dataset, chosen: TrainResult) -> dict[str, Any] | None:
    if spec.search.space.l1 is None:
        return None
    columns = list(zip(data.columns, data.columns_kept(chosen.features_mask), strict=True))
    kept = [n for n, keep in columns if keep]
    removed = [n for n, keep in columns if not keep]
    out: dict[str, Any] = {"kept": kept, "removed": removed}
    if data.informative:  # synthetic data knows which features matter
        info = set(data.informative)
        out["informative_kept"] = sum(n in info for n in kept)
        out["informative_total"] = len(info)
        out["noise_removed"] = sum(n not in info for n in removed)
        out["noise_total"] = data.n_features - len(info)
    return out


def _preprocessing(prep: TablePrep) -> dict[str, Any]:
    """What was done to a table's columns, as the report's ``preprocessing`` says it."""
    columns = [{"name": c.name, "kind": c.kind, "imputed": c.missing, "fill": c.fill}
               | ({"one_hot": c.width, "levels": c.levels, "other_levels": len(c.other)} if c.kind == "category"
                  else {}) for c in prep.columns]
    return {"fitted_on": prep.rows, "max_levels": prep.max_levels, "standardized": prep.standardize,
            "columns": columns, "inputs": len(prep.feature_names)}


def _stage_summary(spec: JobSpec, outcome: StageOutcome) -> dict[str, Any]:
    best = outcome.best
    budget = next(s.trials for s in spec.stages if s.name == outcome.name)
    count = TrialCount.of((t.state for t in outcome.study.get_trials(deepcopy=False)), budget)
    out = {
        "name": outcome.name, "study_name": outcome.study_name, **count.as_dict(),
        "best_trial": best.number if best else None,
        "best_value": (best.values[0] if len(best.values) == 1 else best.values) if best and best.values else None,
        "best_params": _searched(best.user_attrs.get("config", {}), spec) if best else {},
        "fixes": outcome.fixed,
    }
    attrs = outcome.study.user_attrs
    if "l1_max" in attrs:  # a path stage: where it started, and the fits that found it (outside the trials)
        out |= {"l1_max": attrs["l1_max"], "l1_max_found": attrs.get("l1_max_found", {})}
    return out


def _candidate_summary(spec: JobSpec, c: Candidate) -> dict[str, Any]:
    return {"stage": c.stage, "trial": c.trial, "params": _searched(c.config, spec),
            "val_loss_mean": c.mean, "val_loss_std": c.std, "val_loss_se": c.se, "n": len(c.runs),
            "val_losses": c.val_losses}


def _constant_loss(data: Dataset) -> float:
    """The training loss of the best constant prediction: the class prior's entropy, or the variance."""
    y = data.train.y
    if data.task == "classification":
        p = torch.bincount(y).float() / len(y)
        p = p[p > 0]
        return float(-(p * p.log()).sum())
    return float(y.var(unbiased=False))


def _pick(trial: FrozenTrial) -> tuple[str, int | None, dict[str, float]]:
    """A trial as a candidate to re-train: its stage, its number in that stage's study, its configuration."""
    return str(trial.user_attrs["stage"]), trial.number, trial.user_attrs["config"]


def build_report(spec: JobSpec, data: Dataset, outcomes: list[StageOutcome],
                 should_stop: Callable[[], bool] | None = None, model_dir: Path | None = None) -> Report:
    """Re-train the final candidates, choose, and measure the test split once.

    The parts are gathered as JSON-ready values (the explaining notes read them so)
    and checked once, at the end, against the ``Report`` model.

    Args:
        model_dir: where to export the chosen model (the one whose test metrics the report gives), if anywhere.

    Returns:
        The report; ``report.model_dump_json()`` is ``report.json``.
    """
    search_data = data.without_test()
    baseline_outcome = outcomes[0]
    searched = [t for o in outcomes[1:] for t in complete_trials(o.study)]  # every stage: a late one may not help
    top = top_configs(spec, searched, spec.report.top_k)
    base_trial = baseline_outcome.best
    picks: list[tuple[str, int | None, dict[str, float]]] = [
        (baseline_outcome.name, base_trial.number if base_trial else None,
         base_trial.user_attrs["config"] if base_trial else {})]
    picks += [_pick(t) for t in top if t.user_attrs["config"] != picks[0][2]]
    candidates = retrain_candidates(spec, search_data, picks, should_stop)
    path_trials = [t for o, st in zip(outcomes, spec.stages, strict=True) if st.path for t in complete_trials(o.study)]
    path = path_summary(path_trials, data)
    if spec.report.choose == "one_se" and top:
        extras = one_se_extras(spec, searched, candidates, spec.report.top_k)
        sparse = one_se_point(path)  # the path's own lambda.1se is always a candidate
        if sparse is not None:
            extras += [t for t in path_trials if t.user_attrs["stage"] == sparse["stage"]
                       and t.number == sparse["trial"] and t not in extras]
        have = [c.config for c in candidates]
        candidates += retrain_candidates(spec, search_data, [_pick(t) for t in extras
                                                             if t.user_attrs["config"] not in have], should_stop)
    chosen = choose(spec, candidates)
    baseline = candidates[0]
    base_fit = _final(spec, search_data, baseline, should_stop)
    chosen_fit = _final(spec, search_data, chosen, should_stop)
    all_trials = [t for o in outcomes for t in complete_trials(o.study)]
    points = [{"stage": t.user_attrs.get("stage"), "trial": t.number,
               "params": _searched(t.user_attrs.get("config", {}), spec),
               "val_loss": t.user_attrs["val_loss"], "gap": t.user_attrs["gap"]}
              for t in all_trials if "val_loss" in t.user_attrs]
    report: dict[str, Any] = {
        "job": spec.name,
        "task": data.task,
        "baseline": {"params": {}, **_measure(spec, baseline.first, data, base_fit), **_epoch_gaps(baseline.first),
                     "seeds": {"n": len(baseline.runs), "val_loss_mean": baseline.mean,
                               "val_loss_std": baseline.std}},
        "chosen": {"stage": chosen.stage, "trial": chosen.trial, "params": _searched(chosen.config, spec),
                   **_measure(spec, chosen.first, data, chosen_fit),
                   "seeds": {"n": len(chosen.runs), "val_loss_mean": chosen.mean, "val_loss_std": chosen.std}},
        "choose": spec.report.choose,
        "candidates": [_candidate_summary(spec, c) for c in candidates],
        "stages": [_stage_summary(spec, o) for o in outcomes],
        "pareto": pareto_front(points, key=lambda p: (p["val_loss"], p["gap"])),
        "importances": _importances(spec, all_trials),
        "curves": {"baseline": {"train": baseline.first.curve_train, "val": baseline.first.curve_val},
                   "chosen": {"train": chosen.first.curve_train, "val": chosen.first.curve_val}},
    }
    if data.task == "classification" and data.classes:
        report["classes"] = data.classes
    if data.preprocessing is not None:
        report["preprocessing"] = _preprocessing(data.preprocessing)
    if data.task == "regression":
        report["loss_units"] = "mean squared error of the standardized target" if spec.dataset.standardize \
            else "mean squared error"
    if path:
        report["l1_path"] = path
    if search_data.folds:
        k = len(search_data.folds)
        report["validation"] = {
            "method": "cross-validation", "folds": k, "rows": len(search_data.train),
            "note": f"every val loss is the mean over {k} folds of the {len(search_data.train)} non-test rows, its "
                    f"standard error from the folds; the baseline and the chosen configuration were then refit "
                    f"on all {len(search_data.train)} non-test rows (for the folds' mean best epoch) before their "
                    f"one test score."}
    path_stages = {st.name for st in spec.stages if st.path}
    report["bound_hits"] = bound_hits(spec, report["chosen"]["params"], path, chosen.stage in path_stages)
    explained = pareto_choice(spec.search.objectives, report["pareto"], points, report["chosen"],
                              spec.report.choose)
    if explained is not None:
        report["pareto_choice"] = explained
    per_run = spec.training.epochs * (len(search_data.folds) or 1)  # a cross-validated run trains every fold
    cost = [stage_cost(o.name, o.study.get_trials(deepcopy=False), per_run) for o in outcomes]
    cost.append(retrain_cost([(r.epochs, r.seconds) for c in candidates for r in c.runs], per_run))
    if search_data.folds:
        refits = [(f.epochs, f.seconds) for f in (base_fit, chosen_fit)]
        cost.append(retrain_cost(refits, None, name="refit on all non-test rows"))
    report["cost"] = [*cost, total_cost(cost)]
    if spec.model.kind in ("module", "cnn") and spec.model.dropout_layers:
        # per-layer knobs are numbered in named_modules() order: dropout_2 is the third dropout module
        report["dropout_layers"] = {f"dropout_{i}": name for i, name in enumerate(spec.model.dropout_layers)}
    features = _features(spec, data, chosen_fit) if spec.model.kind in ("mlp", "linear") else None
    if features is not None:
        features["stability"] = stable_features(data.columns, [data.columns_kept(r.features_mask)
                                                               for r in chosen.runs])
        features["seeds"] = len(chosen.runs)
        report["features"] = features
    report["diagnosis"] = diagnose(RunSummary.model_validate(report["baseline"]), _constant_loss(data))
    if model_dir is not None and chosen_fit.model is not None:  # the model the test score was measured on
        measured = {k: v for k, v in report["chosen"].items() if k.startswith("test_")}
        export_model(model_dir, chosen_fit.model, spec=spec, data=data, params=chosen.config, measured=measured)
    return Report.model_validate(report)
