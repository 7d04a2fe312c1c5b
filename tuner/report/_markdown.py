"""The diagnosis sentence and the readable ``report.md``."""

from __future__ import annotations

from typing import Any

from tuner.search import count_text

__all__ = ["diagnose", "epoch_gaps", "render_markdown", "stage_count"]

OVERFIT_RELATIVE_GAP = 0.10  # gap as a fraction of the val loss
OVERFIT_ABSOLUTE_GAP = 0.01
UNDERFIT_FRACTION = 0.7  # train loss at this fraction of a constant predictor's loss, or more


def diagnose(report: dict[str, Any], constant_loss: float) -> str:
    """overfitting | no_overfitting | underfitting, and one sentence why, from the baseline.

    Args:
        constant_loss: the training loss of the best constant prediction (class prior, or the mean).
    """
    b = report["baseline"]
    train, val, gap = b["train_loss"], b["val_loss"], b["gap"]
    rel = gap / val if val > 0 else 0.0
    if gap > OVERFIT_ABSOLUTE_GAP and rel > OVERFIT_RELATIVE_GAP:
        return (f"overfitting: without regularization the validation loss ({val:.4g}) is {gap:.4g} above the "
                f"training loss ({train:.4g}), {100 * rel:.0f}% of it, so regularization has room to help.")
    if constant_loss > 0 and train >= UNDERFIT_FRACTION * constant_loss:
        return (f"underfitting: without regularization the training loss ({train:.4g}) is still "
                f"{100 * train / constant_loss:.0f}% of what a constant prediction scores ({constant_loss:.4g}); "
                f"the model needs more capacity or training, not regularization.")
    where = (f"is below the training loss ({train:.4g})" if gap < 0 else
             f"is within {gap:.4g} of the training loss ({train:.4g})")
    return (f"no_overfitting: without regularization the validation loss ({val:.4g}) {where}; regularization "
            f"can only cost fit here, so expect the baseline or a light setting to win.")


def stage_count(summary: dict[str, Any]) -> str:
    """A finished stage's trial count as the report summarizes it (``tuner.search.count_text``)."""
    return count_text(summary["trials"], summary.get("budget", summary["trials"]), pruned=summary.get("pruned", 0),
                      failed=summary.get("failed", 0))


def epoch_gaps(baseline: dict[str, Any]) -> str:
    """The baseline's gap at its best and at its last epoch (early stopping hides part of the overfitting)."""
    best, last = baseline.get("best_epoch"), baseline.get("last_epoch")
    if not best or not last:
        return ""
    if best["epoch"] == last["epoch"]:
        return f"Its val loss was lowest at the last epoch trained ({last['epoch']}). "
    hidden = (": the gap kept growing after the best epoch, overfitting that early stopping hides"
              if last["gap"] > best["gap"] else "")
    return (f"At its best epoch ({best['epoch']}) the gap is {best['gap']:.4g}; at its last epoch "
            f"({last['epoch']}) it is {last['gap']:.4g}{hidden}. ")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "none"
    return "-" if v is None else str(v)


def render_markdown(report: dict[str, Any]) -> str:
    """A report a person reads in a minute: verdict, baseline vs chosen, stages, features."""
    b, c = report["baseline"], report["chosen"]
    metric = "test_acc" if "test_acc" in c else "test_rmse"
    lines = [f"# regtune report: {report['job']}", "", f"**Diagnosis.** {report['diagnosis']} {epoch_gaps(b)}",
             "",
             f"**Chosen** ({report.get('choose', 'best')}): stage `{c['stage']}`, trial {c['trial']}, "
             f"{_fmt(c['params'])}.", "",
             *([f"**Cross-validation.** {report['validation']['note']}\n"] if report.get("validation") else []),
             *[f"**At a bound.** {h['message']}.\n" for h in report.get("bound_hits") or []],
             *([f"**Two objectives.** {report['pareto_choice']['why']}\n"] if report.get("pareto_choice") else []),
             "| | params | train loss | val loss | gap | val loss over seeds | test loss | " + metric + " |",
             "|---|---|---|---|---|---|---|---|"]
    for label, row in (("baseline", b), ("chosen", c)):
        s = row["seeds"]
        lines.append(f"| {label} | {_fmt(row['params'])} | {_fmt(row['train_loss'])} | {_fmt(row['val_loss'])} | "
                     f"{_fmt(row['gap'])} | {s['val_loss_mean']:.4g} ± {s['val_loss_std']:.2g} (n={s['n']}) | "
                     f"{_fmt(row['test_loss'])} | {_fmt(row.get(metric))} |")
    lines += ["", "## Candidates re-trained over seeds", "", "| stage | trial | params | val loss mean ± std |",
              "|---|---|---|---|"]
    for cand in report["candidates"]:
        lines.append(f"| {cand['stage']} | {_fmt(cand['trial'])} | {_fmt(cand['params'])} | "
                     f"{cand['val_loss_mean']:.4g} ± {cand['val_loss_std']:.2g} (n={cand['n']}) |")
    lines += ["", "## Stages", "", "| stage | study | trials | best value | best params |", "|---|---|---|---|---|"]
    for st in report["stages"]:
        lines.append(f"| {st['name']} | `{st['study_name']}` | {stage_count(st)} | {_fmt(st['best_value'])} | "
                     f"{_fmt(st['best_params'])} |")
    if report.get("cost"):
        lines += ["", "## What the search cost", "",
                  "| stage | trials | pruned | failed | epochs run / budgeted | saved by pruning | "
                  "saved by early stopping | seconds |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['stage']} | {r['trials']} | {r['pruned']} | {r['failed']} | {r['epochs_run']} / "
                  f"{r['epochs_budgeted']} | {r['epochs_saved_by_pruning']} | {r['epochs_saved_by_early_stopping']} "
                  f"| {r['seconds']:.1f} |" for r in report["cost"]]
    if report.get("importances"):
        lines += ["", "## Importances (fANOVA, val loss)", "",
                  ", ".join(f"{k}: {v:.2f}" for k, v in report["importances"].items())]
    lines += ["", f"## Pareto front (val loss vs gap): {len(report['pareto'])} trials", ""]
    lines += [f"- {p['stage']} #{p['trial']}: val {p['val_loss']:.4g}, gap {p['gap']:.4g}, {_fmt(p['params'])}"
              for p in report["pareto"][:10]]
    if report.get("dropout_layers"):
        lines += ["", "## Dropout modules (per-layer knobs, in named_modules() order)", "",
                  ", ".join(f"{k} ({name})" for k, name in report["dropout_layers"].items())]
    feats = report.get("features")
    if feats is not None and not c["params"].get("l1"):
        lines += ["", "## Features (L1)", "", "The chosen configuration has l1 = 0: L1 removed no feature."]
    elif feats is not None:
        lines += ["", "## Features (L1)", "", f"Kept {len(feats['kept'])}, removed {len(feats['removed'])}.", "",
                  f"Removed: {', '.join(feats['removed']) or 'none'}"]
        if feats.get("seeds", 0) > 1:
            lines.append(f"\nKept over {feats['seeds']} seed runs: "
                         + ", ".join(f"{x['name']} {x['seeds']}/{feats['seeds']}" for x in feats["stability"]) + ".")
        if "informative_total" in feats:
            lines.append(f"\nInformative features kept: {feats['informative_kept']} of {feats['informative_total']}; "
                         f"noise features removed: {feats['noise_removed']} of {feats['noise_total']}.")
    return "\n".join(lines) + "\n"
