"""The job page: one self-contained HTML file (inline CSS, plots as PNG data URIs, no script, no network).

The same function writes ``report.html`` under ``regtune run --out`` and serves
``GET /jobs/{id}/report.html``. While a job runs, the page shows each stage's
progress and the trial-based plots so far, and reloads itself.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, Field, computed_field

from tuner.knobs import fmt_params
from tuner.report._markdown import epoch_gaps, one_hot_cell, preprocessing_sentence
from tuner.report._model import Report, RunSummary, StageSummary
from tuner.search import TrialCount, count_text

__all__ = ["CAPTIONS", "CSS", "StageProgress", "html_document", "render_html", "stage_progress"]

ACTIVE = ("queued", "running")

CAPTIONS = {
    "learning_curves": "Train (dashed) and val (solid) loss per epoch. A val curve that rises while the "
                       "train curve falls is overfitting; regularization should narrow the band between "
                       "them.",
    "pareto": "Every completed trial. Down is a smaller gap, left a lower val loss; the front holds the "
              "trials no other trial beats on both.",
    "history": "Val loss of each trial in the order the stages ran; the line is each stage's best so far.",
    "knobs": "Val loss against each knob that varied; log priors on a log axis, with 0 (off) to the left.",
    "importances": "How much of the val loss's variation each knob explains (fANOVA over all trials).",
    "candidates": "The final candidates trained again with other seeds. Overlapping bars mean the choice is "
                  "within noise.",
    "sparsity": "Fraction of weights exactly zero against the L1 strength.",
    "l1_path": "The L1 path: λ₁ from the value that removes every input column down, each point warm-started "
               "from the last. Val loss ± one standard error (blue) and columns kept (green); the red line is "
               "the choice. one_se takes the sparsest point within one SE of the best (the dotted line).",
    "features": "Input features the chosen model still uses (a non-zero weight) and those L1 removed.",
}


class StageProgress(BaseModel):
    """How far one stage has come: trials of its budget that reached a verdict, and its best so far.

    The job page reads it, and the service answers it as it is (``GET /jobs/{id}``).
    """

    name: str
    study_name: str
    params: list[str] = Field(default_factory=list, description="the knobs this stage searches")
    total: int = Field(description="the stage's budget: trials that must reach a verdict")
    done: int = Field(description="trials that reached a verdict so far: COMPLETE or PRUNED")
    complete: int = 0
    running: int = 0
    pruned: int = 0
    failed: int = 0
    best_value: float | None = Field(default=None, description="lowest first objective among its trials")

    @computed_field(description="the count as every regtune page shows it: \"8/8 trials (4 pruned, 1 failed)\"")  # type: ignore[prop-decorator]
    @property
    def count(self) -> str:
        return count_text(self.done, self.total, pruned=self.pruned, failed=self.failed, running=self.running)


def stage_progress(stages: list[tuple[str, str, int]], trials: list[FrozenTrial]) -> list[StageProgress]:
    """Progress per stage from ``(name, study_name, budget)`` and the job's trials (stage in user attrs)."""
    out = []
    for name, study, total in stages:
        own = [t for t in trials if t.user_attrs.get("stage") == name]
        complete = [t for t in own if t.state == TrialState.COMPLETE and t.values]
        count = TrialCount.of((t.state for t in own), total)
        out.append(StageProgress(name=name, study_name=study, total=total, done=count.judged,
                                 complete=count.complete, running=count.running, pruned=count.pruned,
                                 failed=count.failed,
                                 best_value=min(t.values[0] for t in complete) if complete else None))
    return out


def _finished_stage(summary: StageSummary) -> StageProgress:
    """A finished stage as the report summarizes it (its best value: the first objective's)."""
    best = summary.best_value
    best = best[0] if isinstance(best, list) else best
    return StageProgress(name=summary.name, study_name=summary.study_name, total=summary.budget,
                         done=summary.trials, pruned=summary.pruned, failed=summary.failed,
                         best_value=float(best) if isinstance(best, (int, float)) else None)


def _n(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return "–" if v is None else escape(str(v))


def _test(row: RunSummary) -> str:
    metric, value = row.test_metric
    if metric == "test_rmse":
        return f"test loss {_n(row.test_loss)}, RMSE {_n(value)}"
    return f"test loss {_n(row.test_loss)}, accuracy {'–' if value is None else f'{100 * value:.1f}%'}"


def verdict(report: Report) -> str:
    """The answer in one paragraph (HTML): the baseline's gap, the choice, its gap and val loss, the test."""
    b, c = report.baseline, report.chosen
    kind, _, why = report.diagnosis.partition(": ")
    pct = f" ({100 * b.gap / b.val_loss:.0f}% of the val loss)" if b.val_loss > 0 else ""
    text = (f"<strong>{escape(kind.replace('_', ' ').capitalize())}.</strong> Without regularization the "
            f"model reaches val loss {_n(b.val_loss)} against train loss {_n(b.train_loss)}: a gap of "
            f"<strong>{_n(b.gap)}</strong>{pct}. {escape(epoch_gaps(b))}")
    bs, cs = b.seeds, c.seeds
    if not any(c.params.values()):
        text += (f"regtune <strong>keeps the baseline</strong>: no setting beat it on the mean val loss over "
                 f"{cs.n} seeds ({_n(cs.val_loss_mean)} ± {_n(cs.val_loss_std, 2)}). ")
    else:
        rule = escape(report.choose)
        text += (f"regtune chooses <strong>{escape(fmt_params(c.params))}</strong> (stage "
                 f"{escape(c.stage)}, trial {_n(c.trial)}, rule “{rule}”): the gap becomes "
                 f"<strong>{_n(c.gap)}</strong> and the val loss <strong>{_n(c.val_loss)}</strong>; "
                 f"over {cs.n} seeds {_n(cs.val_loss_mean)} ± {_n(cs.val_loss_std, 2)} against the "
                 f"baseline's {_n(bs.val_loss_mean)} ± {_n(bs.val_loss_std, 2)}. ")
    text += f"On the held-out test split, measured once: baseline {_test(b)}; chosen {_test(c)}."
    return f'<p class="verdict">{text}</p>\n<p class="why">{escape(why)}</p>'


def _table(report: Report) -> str:
    metric = report.chosen.test_metric[0]
    head = ["", "params", "train loss", "val loss", "gap", "val loss over seeds", "test loss", metric]
    rows = []
    for label, r in (("baseline", report.baseline), ("chosen", report.chosen)):
        s = r.seeds
        cells = [label, escape(fmt_params(r.params)), _n(r.train_loss), _n(r.val_loss),
                 _n(r.gap), f"{_n(s.val_loss_mean)} ± {_n(s.val_loss_std, 2)} (n={s.n})",
                 _n(r.test_loss), _n(r.test_metric[1])]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def _cost(report: Report) -> str:
    """What the search cost, per stage and for re-training the candidates over seeds."""
    if not report.cost:
        return ""
    head = ["stage", "trials", "pruned", "failed", "epochs run / budgeted", "saved by pruning",
            "saved by early stopping", "compute seconds"]
    body = "".join(
        f"<tr><td>{escape(r.stage)}</td><td>{r.trials}</td><td>{r.pruned}</td><td>{r.failed}</td>"
        f"<td>{r.epochs_run} / {r.epochs_budgeted}</td><td>{r.epochs_saved_by_pruning}</td>"
        f"<td>{r.epochs_saved_by_early_stopping}</td><td>{r.seconds:.1f}</td></tr>" for r in report.cost)
    return ('<h2>What the search cost</h2><table id="cost"><tr>' + "".join(f"<th>{h}</th>" for h in head)
            + "</tr>" + body + "</table>")


def _stages(progress: Sequence[StageProgress], links: dict[str, str]) -> str:
    rows = []
    for p in progress:
        name = escape(p.name)
        link = f' <a href="{escape(links[p.name])}">dashboard</a>' if p.name in links else ""
        rows.append(f"<tr><td>{name}</td><td><code>{escape(p.study_name)}</code>{link}</td>"
                    f'<td><progress max="{p.total}" value="{min(p.done, p.total)}"></progress> '
                    f"{escape(p.count)}</td>"
                    f"<td>{_n(p.best_value)}</td></tr>")
    return ("<table><tr><th>stage</th><th>study</th><th>trials</th><th>best objective</th></tr>"
            + "".join(rows) + "</table>")


def _figures(plots: dict[str, bytes], png_href: str | None) -> str:
    out = []
    for name, png in plots.items():
        data = base64.b64encode(png).decode("ascii")
        link = f' <a href="{escape(png_href.format(name=name))}">PNG</a>' if png_href else ""
        caption = escape(CAPTIONS.get(name, ""))
        out.append(f'<figure id="{name}"><img alt="{name.replace("_", " ")}" '
                   f'src="data:image/png;base64,{data}"><figcaption>{caption}{link}</figcaption></figure>')
    return "\n".join(out)


def _features(report: Report) -> str:
    f = report.features
    if f is None:
        return ""
    removed = ", ".join(escape(n) for n in f.removed) or "none"
    out = (f"<h2>Features (L1)</h2><p>Kept {len(f.kept)}, removed {len(f.removed)}. "
           f"Removed: {removed}.</p>")
    if f.stability and f.seeds > 1:
        cells = "".join(f"<tr><td>{escape(s.name)}</td><td>{s.seeds} of {f.seeds}</td>"
                        f"<td>{100 * s.share:.0f}%</td></tr>" for s in f.stability)
        out += (f"<p>How stable the selection is: the columns kept by any of the chosen configuration's "
                f'{f.seeds} seed runs, with the share of runs that kept each.</p><table id="stability">'
                f"<tr><th>column</th><th>kept by</th><th>share</th></tr>{cells}</table>")
    return out


def _data(report: Report) -> str:
    """The class labels, and what was done to a table's columns before training."""
    prep = report.preprocessing
    if prep is None and not report.classes:
        return ""
    out = "<h2>Data</h2>"
    if report.classes:
        out += '<p id="classes">Classes: ' + ", ".join(escape(str(c)) for c in report.classes) + ".</p>"
    if prep is not None:
        cells = "".join(f"<tr><td>{escape(c.name)}</td><td>{c.kind}</td><td>{c.imputed}</td>"
                        f"<td>{_n(c.fill)}</td>"
                        f"<td>{escape(one_hot_cell(c))}</td></tr>" for c in prep.columns)
        out += (f"<p>{escape(preprocessing_sentence(prep))}</p><table id=\"preprocessing\"><tr><th>column</th>"
                f"<th>kind</th><th>imputed</th><th>filled with</th><th>one-hot columns</th></tr>{cells}</table>")
    return out


def notes(report: Report) -> str:
    """What qualifies the verdict: a choice at the edge of its prior, and its place on a Pareto front."""
    out = [f'<p class="bound">{escape(h.message)}.</p>' for h in report.bound_hits]
    if report.validation:
        out.insert(0, f'<p id="validation">Cross-validation: {escape(report.validation.note)}</p>')
    if report.pareto_choice:
        out.append(f'<p id="pareto-choice">Two objectives: {escape(report.pareto_choice.why)}</p>')
    return "\n".join(out)


CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1000px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.5em;margin-bottom:.2em}
.meta{color:#666}
.bound{background:#fff6e0;border-left:4px solid #e8a33d;padding:.4em 1em}
.verdict{font-size:1.08em;background:#f4f7fb;border-left:4px solid #1f77b4;padding:.8em 1em}.why{color:#555}
.status{display:inline-block;padding:.1em .6em;border-radius:1em;background:#eee}.failed{background:#fdd}
.succeeded{background:#dfd}.running,.queued{background:#ffd}table{border-collapse:collapse;margin:1em 0}
td,th{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:left;font-size:.92em}
figure{margin:1.5em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
pre{background:#fee;padding:1em;white-space:pre-wrap}"""


def render_html(report: Report | None, plots: dict[str, bytes], *, title: str,
                status: str = "succeeded", progress: Sequence[StageProgress] | None = None,
                error: str | None = None, study_links: dict[str, str] | None = None,
                png_href: str | None = "plots/{name}.png", home_href: str | None = None,
                refresh_seconds: int = 5) -> str:
    """The job page.

    Args:
        report: the final report, or None while the job has none (queued, running, failed).
        plots: PNG bytes by name, from ``tuner.plots.render_plots``; shown in that order.
        title: the job's label (its name, and its id in the service).
        status: queued | running | succeeded | failed | cancelled; queued and running pages reload themselves.
        progress: each stage's progress (``stage_progress``); by default, the report's stages.
        error: why a failed job failed.
        study_links: stage name → the stage's study in the Optuna dashboard.
        png_href: where each plot's PNG is, relative to the page (``{name}`` is replaced); None for no links.
        home_href: a link back to the jobs list.
        refresh_seconds: how often a running page reloads.

    Returns:
        The HTML document.
    """
    links = study_links or {}
    if progress is None and report is not None:
        progress = [_finished_stage(s) for s in report.stages]
    parts = []
    if home_href:
        parts.append(f'<p><a href="{escape(home_href)}">← all jobs</a></p>')
    parts.append(f'<h1>regtune: {escape(title)}</h1><p class="meta">status <span class="status '
                 f'{escape(status)}">{escape(status)}</span>'
                 + (f" · reloads every {int(refresh_seconds)} s" if status in ACTIVE else "") + "</p>")
    if error:
        parts.append(f"<h2>Error</h2><pre>{escape(error)}</pre>")
    if report is not None:
        parts += ["<h2>Verdict</h2>", verdict(report), notes(report), _table(report)]
    elif status in ACTIVE:
        parts.append("<p>The job is under way; the verdict comes when the last stage and the re-training "
                     "over seeds are done. The plots below are drawn from the trials so far.</p>")
    if progress:
        parts += ["<h2>Stages</h2>", _stages(progress, links)]
    if report is not None:
        parts.append(_cost(report))
    if plots:
        parts += ["<h2>Plots</h2>", _figures(plots, png_href)]
    if report is not None:
        parts += [_data(report), _features(report)]
    return html_document(f"regtune: {title}", "\n".join(parts),
                         refresh_seconds=refresh_seconds if status in ACTIVE else None)


def html_document(title: str, body: str, *, refresh_seconds: int | None = None) -> str:
    """A whole page around ``body`` (HTML) with the house CSS inline; it reloads itself when asked to.

    Args:
        title: plain text (escaped here).
        refresh_seconds: reload the page this often (a ``<meta http-equiv="refresh">``); None for never.
    """
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">' if refresh_seconds else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">{refresh}'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<link rel="icon" href="data:,">'  # no favicon request
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
