"""The report's plots and the job page: real PNG images of the job's numbers, a self-contained page."""

from __future__ import annotations

import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from PIL import Image, ImageStat

from tuner import load_spec, run_job, write_report
from tuner.plots import PLOTS, render_plot, render_plots
from tuner.report import FeatureSummary, Report, StageProgress, render_html, render_markdown, stage_progress

TRIAL_PLOTS = {"pareto", "history", "knobs", "sparsity"}
L1 = FloatDistribution(1e-5, 1e-1, log=True)
L2 = FloatDistribution(1e-6, 1e-2, log=True)
DROPOUT = FloatDistribution(0.0, 0.5)


def _trial(stage: str, config: dict[str, float], val: float, train: float) -> FrozenTrial:
    params: dict[str, Any] = {}
    dists: dict[str, Any] = {}
    if stage != "baseline":
        params |= {"l1_on": config["l1"] > 0, "l2": config["l2"], "dropout": config["dropout"]}
        dists |= {"l1_on": CategoricalDistribution([False, True]), "l2": L2, "dropout": DROPOUT}
        if config["l1"] > 0:
            params["l1"], dists["l1"] = config["l1"], L1
    curve = [val * (1 + 0.5 / (e + 1)) for e in range(6)]
    return optuna.trial.create_trial(
        params=params, distributions=dists, value=val,
        user_attrs={"stage": stage, "config": config, "train_loss": train, "val_loss": val,
                    "gap": val - train, "train_acc": 0.9, "val_acc": 0.85,
                    "sparsity": min(1.0, 20 * config["l1"]), "features_kept": 8, "epochs": 6, "seconds": 0.1,
                    "train_curve": curve, "val_curve": curve})


@pytest.fixture(scope="module")
def trials() -> list[FrozenTrial]:
    """Three stages' trials, numbered as their studies number them."""
    out: list[FrozenTrial] = []
    stages: dict[str, list[FrozenTrial]] = {
        "baseline": [_trial("baseline", {"l1": 0.0, "l2": 0.0, "dropout": 0.0}, 0.60, 0.20)],
        "l2": [_trial("l2", {"l1": 0.0, "l2": 10 ** -(2 + i / 2), "dropout": 0.0}, 0.45 + 0.02 * i,
                      0.3 - 0.02 * i) for i in range(5)],
        "joint": [_trial("joint", {"l1": 0.0 if i % 3 == 0 else 10 ** -(1 + i / 2), "l2": 10 ** -(2 + i / 3),
                                   "dropout": 0.05 * i}, 0.40 + 0.01 * (i - 4) ** 2, 0.30 + 0.005 * i)
                  for i in range(9)],
    }
    for made in stages.values():
        study = optuna.create_study()
        for t in made:
            study.add_trial(t)
        out += study.get_trials()
    pruned = optuna.create_study()
    pruned.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={"stage": "joint"}))
    return out + pruned.get_trials()


def _report(features: int = 6) -> Report:
    names = [f"pixel_{i // 8}_{i % 8}" for i in range(features)] if features > 60 else [f"x{i}" for i in
                                                                                         range(features)]
    row = {"train_loss": 0.2, "val_loss": 0.6, "gap": 0.4, "test_loss": 0.65, "test_acc": 0.8, "epochs": 6,
           "sparsity": 0.0, "features_kept": features,
           "seeds": {"n": 3, "val_loss_mean": 0.61, "val_loss_std": 0.03}}
    chosen = {"stage": "joint", "trial": 4, "params": {"l1": 0.001, "l2": 0.0001, "dropout": 0.2},
              "train_loss": 0.32, "val_loss": 0.40, "gap": 0.08, "test_loss": 0.42, "test_acc": 0.9,
              "epochs": 6, "sparsity": 0.5, "features_kept": (features + 1) // 2,
              "seeds": {"n": 3, "val_loss_mean": 0.41, "val_loss_std": 0.01}}
    curve = [0.9, 0.7, 0.6, 0.55, 0.58, 0.6]
    return Report.model_validate({
        "job": "demo", "task": "classification", "choose": "best",
        "diagnosis": "overfitting: without regularization the validation loss is far above the training one.",
        "baseline": {"params": {}, **row}, "chosen": chosen,
        "candidates": [{"stage": "baseline", "trial": 0, "params": {"l1": 0.0, "l2": 0.0, "dropout": 0.0},
                        "val_loss_mean": 0.61, "val_loss_std": 0.03, "val_loss_se": 0.02, "n": 3,
                        "val_losses": [0.6, 0.58, 0.65]},
                       {"stage": "joint", "trial": 4, "params": chosen["params"], "val_loss_mean": 0.41,
                        "val_loss_std": 0.01, "val_loss_se": 0.01, "n": 3, "val_losses": [0.40, 0.41, 0.42]}],
        "stages": [{"name": n, "study_name": f"demo/{n}", "trials": k, "budget": k, "completed": k, "pruned": 0,
                    "failed": 0, "best_trial": 0, "best_value": 0.4, "best_params": {}, "fixes": {}}
                   for n, k in (("baseline", 1), ("l2", 5), ("joint", 9))],
        "pareto": [], "importances": {"l2": 0.6, "dropout": 0.3, "l1": 0.1},
        "curves": {"baseline": {"train": [0.8, 0.5, 0.3, 0.2, 0.15, 0.1], "val": curve},
                   "chosen": {"train": [0.9, 0.7, 0.5, 0.4, 0.35, 0.32],
                              "val": [0.9, 0.6, 0.5, 0.45, 0.42, 0.4]}},
        "features": {"kept": names[::2], "removed": names[1::2], "seeds": 3,
                     "stability": [{"name": n, "seeds": 3, "share": 1.0} for n in names[::2]]},
        "l1_path": [{"l1": 0.3 * 0.5**i, "val_loss": 0.7 - 0.3 * (1 - 0.6**i) + 0.004 * max(0, i - 6),
                     "val_loss_se": 0.02 + 0.003 * i, "features_kept": min(features, i // 2),
                     "kept": names[: min(features, i // 2)], "stage": "l1", "trial": i} for i in range(12)],
        "bound_hits": [], "cost": [],
    })


def _image(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(png)).convert("RGB")


def assert_drawn(png: bytes) -> None:
    """A real picture: a sensible size, many colours, pixels far from uniform."""
    img = _image(png)
    assert img.width >= 400 and img.height >= 150, img.size
    assert len(img.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    assert max(ImageStat.Stat(img).stddev) > 15


@pytest.mark.parametrize("name", list(PLOTS))
def test_every_plot_is_a_real_image(name: str, trials: list[FrozenTrial]) -> None:
    png = render_plot(name, _report(), trials)
    assert png is not None, f"{name} drew nothing for a full report"
    assert_drawn(png)


def test_a_running_job_gets_the_plots_of_its_trials(trials: list[FrozenTrial]) -> None:
    assert set(render_plots(None, trials)) == TRIAL_PLOTS
    assert render_plots(None, []) == {}


def test_no_l1_means_no_sparsity_or_features(trials: list[FrozenTrial]) -> None:
    no_l1 = [t for t in trials if not t.user_attrs.get("config", {}).get("l1")]
    report = _report()
    report.features, report.l1_path = None, None
    assert set(render_plots(report, no_l1)) == set(PLOTS) - {"sparsity", "features", "l1_path"}


def test_many_features_are_drawn_as_a_grid(trials: list[FrozenTrial]) -> None:
    png = render_plot("features", _report(features=64), trials)
    assert png is not None
    img = _image(png)
    assert img.width == img.height  # the square grid, not one named box per feature
    assert_drawn(png)


def test_log_priors_get_a_log_axis(trials: list[FrozenTrial]) -> None:
    fig = PLOTS["knobs"](None, trials)
    assert fig is not None
    scales = {ax.get_xlabel(): ax.get_xscale() for ax in fig.axes if ax.get_visible()}
    assert scales == {"l1 (log axis)": "log", "l2 (log axis)": "log", "dropout": "linear"}


def test_the_chosen_point_is_on_the_pareto_plot(trials: list[FrozenTrial]) -> None:
    fig = PLOTS["pareto"](_report(), trials)
    assert fig is not None
    legend = fig.axes[0].get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert {"chosen", "baseline", "Pareto front"} <= set(labels)
    assert "joint (9)" in labels  # the pruned trial is not drawn


def test_an_unknown_plot_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="valid plots are: learning_curves, pareto"):
        render_plot("pie", None, [])


def test_the_page_says_the_verdict_and_needs_no_network(trials: list[FrozenTrial]) -> None:
    report = _report()
    assert report.features is not None
    report.features.removed.append("<b>odd</b> name")
    plots = render_plots(report, trials)
    page = render_html(report, plots, title="demo", study_links={"l2": "/dashboard/studies/2"})
    text = re.sub(r"<[^>]+>", "", page)
    assert "a gap of 0.4" in text and "(67% of the val loss)" in text
    assert "l1=0.001, l2=0.0001, dropout=0.2" in text
    assert "the gap becomes 0.08 and the val loss 0.4" in text
    assert "baseline test loss 0.65, accuracy 80.0%; chosen test loss 0.42, accuracy 90.0%" in text
    assert not re.search(r"https?://", page), "the page must not point outside the machine"
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(plots) == len(PLOTS)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "&lt;b&gt;odd&lt;/b&gt; name" in page and "<b>odd" not in page
    assert 'href="/dashboard/studies/2"' in page and 'href="plots/pareto.png"' in page
    assert "http-equiv=\"refresh\"" not in page


def test_a_running_page_shows_progress_and_refreshes(trials: list[FrozenTrial]) -> None:
    stages = [("baseline", "demo/baseline", 1), ("l2", "demo/l2", 5), ("joint", "demo/joint", 20)]
    progress = stage_progress(stages, trials)
    # 9 completed and 1 pruned: 10 judged of the budget of 20, as the service and report.md count
    assert progress[2].model_dump() == StageProgress(
        name="joint", study_name="demo/joint", total=20, done=10, complete=9, running=0, pruned=1, failed=0,
    ).model_dump() | {"best_value": pytest.approx(0.40)}
    page = render_html(None, render_plots(None, trials), title="demo", status="running", progress=progress,
                       refresh_seconds=7)
    assert '<meta http-equiv="refresh" content="7">' in page
    assert 'value="10"' in page and "10/20 trials (1 pruned)" in page
    assert "Verdict" not in page and page.count("<img") == len(TRIAL_PLOTS)


def test_write_report_writes_the_page_and_the_pngs(tmp_path: Path, trials: list[FrozenTrial]) -> None:
    write_report(_report(), tmp_path, trials)
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {f"{n}.png" for n in PLOTS}
    for png in (tmp_path / "plots").iterdir():
        assert_drawn(png.read_bytes())
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(PLOTS)


def test_regtune_run_writes_a_job_page_from_real_trials(tmp_path: Path) -> None:
    spec = load_spec("""
name: iris-page
dataset: {source: sklearn, name: iris}
model: {kind: linear}
training: {epochs: 5, batch_size: 32, lr: 0.05}
search:
  sampler: random
  pruner: none
  space:
    l1: {low: 1.0e-4, high: 1.0e-1, log: true, allow_zero: true}
    l2: {low: 1.0e-5, high: 1.0e-2, log: true}
  stages:
    - {name: baseline, params: [], trials: 1}
    - {name: joint, params: [l1, l2], trials: 4}
report: {top_k: 2, seeds: 1}
""")
    out = tmp_path / "out"
    report = run_job(spec, storage=f"sqlite:///{tmp_path}/runs.db", out_dir=out)
    assert json.loads((out / "report.json").read_text())["job"] == "iris-page"
    assert report.features is not None
    written = {p.stem for p in (out / "plots").glob("*.png")}
    assert {"learning_curves", "pareto", "history", "knobs", "candidates", "sparsity", "features"} <= written
    curves = _image((out / "plots" / "learning_curves.png").read_bytes())
    assert_drawn((out / "plots" / "learning_curves.png").read_bytes())
    assert curves.size == (750, 420)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"val loss {report.baseline.val_loss:.4g}" in page
    assert "sepal length (cm)" in page or "petal width (cm)" in page or not report.features.removed
    assert not re.search(r"https?://", page)
    assert math.isfinite(report.chosen.val_loss)


@pytest.mark.parametrize("features", [6, 64])
def test_removed_features_are_drawn_grey_as_the_title_says(features: int, trials: list[FrozenTrial]) -> None:
    png = render_plot("features", _report(features=features), trials)
    assert png is not None
    colours = {c for _, c in _image(png).getcolors(maxcolors=1 << 16) or []}
    assert (0xcc, 0xcc, 0xcc) in colours and (0x2c, 0xa0, 0x2c) in colours  # removed grey, kept green
    warm = [c for c in colours if c[0] > 180 and c[0] - c[2] > 80 and c[1] < 200]  # orange and red hues
    assert not warm, warm[:5]


@pytest.mark.parametrize("l1", [0.0, 0.001])
def test_l1_kept_features_is_said_only_when_the_choice_uses_l1(l1: float, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from api.progress_bars import BarProgress

    report = _report()
    report.chosen.params["l1"] = l1
    BarProgress(quiet=True).summary(report, tmp_path)
    printed, md = capsys.readouterr().out, render_markdown(report)
    assert ("L1 kept 3 features, removed 3" in printed) == (l1 > 0)
    assert ("Kept 3, removed 3." in md) == (l1 > 0)
    assert ("The chosen configuration has l1 = 0: L1 removed no feature." in md) == (l1 == 0)


MATHTEXT = ["$x^2$", r"$\frac{a$", "price ($)", "a$b$c", "$$", r"\$ok$", r"$\notacommand$", "x_1^{2}", "50%$"]


def test_user_text_is_drawn_literally_never_as_mathtext(trials: list[FrozenTrial]) -> None:
    report = _report()
    report.features = FeatureSummary(kept=MATHTEXT[::2], removed=MATHTEXT[1::2], stability=[], seeds=1)
    report.candidates[1].stage = "$x$"  # the spec's name rules keep '$' out of stage names; drawn safely anyway
    odd = [optuna.trial.create_trial(value=t.value, params=t.params, distributions=t.distributions,
                                     user_attrs={**t.user_attrs, "stage": r"$\bad{$"}) for t in trials[:4]]
    pngs = render_plots(report, odd + trials[4:])
    assert set(pngs) == set(PLOTS)
    for png in pngs.values():
        assert_drawn(png)


def test_a_csv_with_mathtext_headers_gets_every_plot_and_its_page(tmp_path: Path, sqlite_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    header = [f'"{h}"' for h in MATHTEXT] + ["y"]
    rows = [",".join(f"{(i * (j + 3)) % 11 / 3:.3f}" for j in range(len(MATHTEXT))) + f",{i % 2}" for i in range(60)]
    (tmp_path / "d.csv").write_text("\n".join([",".join(header), *rows]) + "\n", encoding="utf-8")
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    spec = load_spec(json.dumps({
        "name": "mathtext", "dataset": {"source": "csv", "path": "d.csv", "target": "y"},
        "model": {"kind": "linear"}, "training": {"epochs": 2, "batch_size": 32},
        "search": {"sampler": "random", "pruner": "none", "space": {"l1": {"low": 1e-3, "high": 1e-1, "log": True}},
                   "stages": [{"name": "baseline", "params": [], "trials": 1}, {"name": "l1", "params": ["l1"],
                                                                                "trials": 2}]},
        "report": {"top_k": 1, "seeds": 0}}))
    report = run_job(spec, storage=sqlite_url, out_dir=tmp_path / "out")
    assert report.features is not None
    assert sorted(report.features.kept + report.features.removed) == sorted(MATHTEXT)
    assert {p.name for p in (tmp_path / "out" / "plots").iterdir()} >= {"features.png", "sparsity.png"}
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert all(html.escape(name) in page for name in report.features.removed)
