"""The diagnosis sentence and the readable ``report.md``."""

from __future__ import annotations

from typing import Any

from tuner.knobs import fmt_params
from tuner.report._model import Preprocessing, Report, RunSummary, StageSummary, TableColumn
from tuner.search import count_text

__all__ = ["data_lines", "diagnose", "epoch_gaps", "one_hot_cell", "preprocessing_sentence", "render_markdown",
           "stage_count"]

OVERFIT_RELATIVE_GAP = 0.10  # gap as a fraction of the val loss
OVERFIT_ABSOLUTE_GAP = 0.01
UNDERFIT_FRACTION = 0.7  # train loss at this fraction of a constant predictor's loss, or more


def diagnose(baseline: RunSummary, constant_loss: float) -> str:
    """overfitting | no_overfitting | underfitting, and one sentence why, from the baseline.

    Args:
        baseline: the report's run without regularization.
        constant_loss: the training loss of the best constant prediction (class prior, or the mean).
    """
    train, val, gap = baseline.train_loss, baseline.val_loss, baseline.gap
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


def stage_count(summary: StageSummary) -> str:
    """A finished stage's trial count as the report summarizes it (``tuner.search.count_text``)."""
    return count_text(summary.trials, summary.budget, pruned=summary.pruned, failed=summary.failed)


def epoch_gaps(baseline: RunSummary) -> str:
    """The baseline's gap at its best and at its last epoch (early stopping hides part of the overfitting)."""
    best, last = baseline.best_epoch, baseline.last_epoch
    if best is None or last is None:
        return ""
    if best.epoch == last.epoch:
        return f"Its val loss was lowest at the last epoch trained ({last.epoch}). "
    hidden = (": the gap kept growing after the best epoch, overfitting that early stopping hides"
              if last.gap > best.gap else "")
    return (f"At its best epoch ({best.epoch}) the gap is {best.gap:.4g}; at its last epoch "
            f"({last.epoch}) it is {last.gap:.4g}{hidden}. ")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return fmt_params(v)
    return "-" if v is None else str(v)


def one_hot_cell(col: TableColumn) -> str:
    """A category's one-hot columns in words: ``3 (2 levels + other of 4 rare)``; ``-`` for a number."""
    if col.kind != "category":
        return "-"
    rare = f" + other ({col.other_levels} rare levels)" if col.other_levels else ""
    return f"{col.one_hot}: {len(col.levels or [])} levels{rare}"


def preprocessing_sentence(prep: Preprocessing) -> str:
    """What was done to a table, in one sentence."""
    return (f"Fitted on the {prep.fitted_on} training rows only: a missing number became their median, a missing "
            f"category their most frequent level; categories were one-hot encoded (at most {prep.max_levels} "
            f"columns each, rarer levels in one `other` column)"
            + ("; numbers were standardized" if prep.standardized else "") + f". {prep.inputs} model inputs.")


def data_lines(report: Report) -> list[str]:
    """The Data section: the class labels, and what was done to a table's columns."""
    prep = report.preprocessing
    if prep is None and not report.classes:
        return []
    lines = ["", "## Data", ""]
    if report.classes:
        lines.append("Classes: " + ", ".join(str(c) for c in report.classes) + ".")
    if prep is not None:
        lines += ["", preprocessing_sentence(prep), "", "| column | kind | imputed | filled with | one-hot columns |",
                  "|---|---|---|---|---|"]
        lines += [f"| {col.name} | {col.kind} | {col.imputed} | {_fmt(col.fill)} | {one_hot_cell(col)} |"
                  for col in prep.columns]
    return lines


def render_markdown(report: Report) -> str:
    """A report a person reads in a minute: verdict, baseline vs chosen, stages, features."""
    b, c = report.baseline, report.chosen
    metric = c.test_metric[0]
    lines = [f"# regtune report: {report.job}", "", f"**Diagnosis.** {report.diagnosis} {epoch_gaps(b)}", "",
             f"**Chosen** ({report.choose}): stage `{c.stage}`, trial {c.trial}, {_fmt(c.params)}.", "",
             *([f"**Cross-validation.** {report.validation.note}\n"] if report.validation else []),
             *[f"**At a bound.** {h.message}.\n" for h in report.bound_hits],
             *([f"**Two objectives.** {report.pareto_choice.why}\n"] if report.pareto_choice else []),
             "| | params | train loss | val loss | gap | val loss over seeds | test loss | " + metric + " |",
             "|---|---|---|---|---|---|---|---|"]
    for label, row in (("baseline", b), ("chosen", c)):
        s = row.seeds
        lines.append(f"| {label} | {_fmt(row.params)} | {_fmt(row.train_loss)} | {_fmt(row.val_loss)} | "
                     f"{_fmt(row.gap)} | {s.val_loss_mean:.4g} ± {s.val_loss_std:.2g} (n={s.n}) | "
                     f"{_fmt(row.test_loss)} | {_fmt(row.test_metric[1])} |")
    lines += ["", "## Candidates re-trained over seeds", "", "| stage | trial | params | val loss mean ± std |",
              "|---|---|---|---|"]
    for cand in report.candidates:
        lines.append(f"| {cand.stage} | {_fmt(cand.trial)} | {_fmt(cand.params)} | "
                     f"{cand.val_loss_mean:.4g} ± {cand.val_loss_std:.2g} (n={cand.n}) |")
    lines += ["", "## Stages", "", "| stage | study | trials | best value | best params |", "|---|---|---|---|---|"]
    for st in report.stages:
        lines.append(f"| {st.name} | `{st.study_name}` | {stage_count(st)} | {_fmt(st.best_value)} | "
                     f"{_fmt(st.best_params)} |")
    if report.cost:
        lines += ["", "## What the search cost", "",
                  "| stage | trials | pruned | failed | epochs run / budgeted | saved by pruning | "
                  "saved by early stopping | seconds |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.stage} | {r.trials} | {r.pruned} | {r.failed} | {r.epochs_run} / "
                  f"{r.epochs_budgeted} | {r.epochs_saved_by_pruning} | {r.epochs_saved_by_early_stopping} "
                  f"| {r.seconds:.1f} |" for r in report.cost]
    if report.importances:
        lines += ["", "## Importances (fANOVA, val loss)", "",
                  ", ".join(f"{k}: {v:.2f}" for k, v in report.importances.items())]
    lines += ["", f"## Pareto front (val loss vs gap): {len(report.pareto)} trials", ""]
    lines += [f"- {p.stage} #{p.trial}: val {p.val_loss:.4g}, gap {p.gap:.4g}, {_fmt(p.params)}"
              for p in report.pareto[:10]]
    if report.dropout_layers:
        lines += ["", "## Dropout modules (per-layer knobs, in named_modules() order)", "",
                  ", ".join(f"{k} ({name})" for k, name in report.dropout_layers.items())]
    lines += data_lines(report)
    feats = report.features
    if feats is not None and not c.params.get("l1"):
        lines += ["", "## Features (L1)", "", "The chosen configuration has l1 = 0: L1 removed no feature."]
    elif feats is not None:
        lines += ["", "## Features (L1)", "", f"Kept {len(feats.kept)}, removed {len(feats.removed)}.", "",
                  f"Removed: {', '.join(feats.removed) or 'none'}"]
        if feats.seeds > 1:
            lines.append(f"\nKept over {feats.seeds} seed runs: "
                         + ", ".join(f"{x.name} {x.seeds}/{feats.seeds}" for x in feats.stability) + ".")
        if feats.informative_total is not None:
            lines.append(f"\nInformative features kept: {feats.informative_kept} of {feats.informative_total}; "
                         f"noise features removed: {feats.noise_removed} of {feats.noise_total}.")
    return "\n".join(lines) + "\n"
