"""The HTML pages and the PNG endpoints, over SQLite and PostgreSQL: what a person opens in a browser."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from _service import make_spec
from fastapi.testclient import TestClient
from PIL import Image, ImageStat

from api.worker import Runner
from tuner import Report
from tuner.plots import PLOTS, render_plot

REPORT_PLOTS = {"learning_curves", "importances", "candidates", "features"}


def _submit(client: TestClient, spec: dict[str, Any]) -> str:
    r = client.post("/jobs", json=spec)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def _trials(storage_url: str, report: dict[str, Any]) -> list[optuna.trial.FrozenTrial]:
    return [t for s in report["stages"]
            for t in optuna.load_study(study_name=s["study_name"], storage=storage_url).get_trials()]


def test_pages_follow_a_job_from_queued_to_succeeded(client: TestClient, runner: Runner) -> None:
    job = _submit(client, make_spec("pages", epochs=4, trials=3))
    home = client.get("/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    assert f'href="/jobs/{job}/report.html"' in home.text and "queued" in home.text
    assert '<meta http-equiv="refresh"' in home.text  # an active job: the list reloads itself
    page = client.get(f"/jobs/{job}/report.html")
    assert page.status_code == 200 and '<meta http-equiv="refresh"' in page.text and "0/3" in page.text

    assert runner.run_once()
    home = client.get("/")
    assert "succeeded" in home.text and '<meta http-equiv="refresh"' not in home.text
    detail = client.get(f"/jobs/{job}").json()
    assert f"{detail['best']['value']:.4g}" in home.text
    studies = re.findall(r'href="/dashboard/studies/(\d+)">(\w+)</a>', home.text)
    assert [stage for _, stage in studies] == ["baseline", "l2"]

    page = client.get(f"/jobs/{job}/report.html").text
    report = client.get(f"/jobs/{job}/report").json()
    assert '<meta http-equiv="refresh"' not in page
    assert f"a gap of <strong>{report['baseline']['gap']:.4g}</strong>" in page
    assert f"test loss {report['chosen']['test_loss']:.4g}" in page
    assert not re.search(r"https?://", page)
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', page)
    assert len(images) == len(PLOTS) - 3  # no L1 searched: no sparsity, no features, no L1 path
    for sid, stage in studies:
        assert f'href="/dashboard/studies/{sid}">dashboard</a>' in page
        assert client.get(f"/api/studies/{sid}").json()["name"].endswith(f"/{stage}")


def test_png_endpoints_draw_the_jobs_own_data(client: TestClient, runner: Runner, storage_url: str) -> None:
    job = _submit(client, make_spec("pngs", epochs=4, trials=3))
    early = client.get(f"/jobs/{job}/plots/learning_curves.png")
    assert early.status_code == 409 and early.json()["error"]["code"] == "plot_not_ready"
    assert runner.run_once()
    report = client.get(f"/jobs/{job}/report").json()
    trials = _trials(storage_url, report)
    for name in ("learning_curves", "pareto", "history", "knobs", "candidates"):
        r = client.get(f"/jobs/{job}/plots/{name}.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", (name, r.text[:200])
        img = Image.open(io.BytesIO(r.content)).convert("RGB")
        assert img.width >= 600 and img.height >= 200 and len(r.content) > 10_000, (name, img.size)
        assert max(ImageStat.Stat(img).stddev) > 15, f"{name} is blank"
        assert r.content == render_plot(name, Report.model_validate(report), trials), \
            f"{name} is not drawn from this job's data"


def test_png_endpoint_errors_name_the_problem(client: TestClient, runner: Runner) -> None:
    job = _submit(client, make_spec("errs", epochs=2, trials=1))
    assert runner.run_once()
    r = client.get(f"/jobs/{job}/plots/pie.png")
    assert r.status_code == 404 and "the plots are: learning_curves, pareto" in r.json()["error"]["message"]
    r = client.get(f"/jobs/{job}/plots/features.png")  # no L1 searched
    assert r.status_code == 404 and r.json()["error"]["code"] == "plot_not_available"
    assert client.get("/jobs/0123456789ab/plots/pareto.png").json()["error"]["code"] == "job_not_found"
    assert client.get("/jobs/0123456789ab/report.html").status_code == 404
    assert client.get("/?status=nonsense").status_code == 422


def test_mathtext_in_csv_headers_breaks_no_page_and_no_plot(client: TestClient, runner: Runner, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    headers = ["$x^2$", r"$\frac{a$", "a$b$c", r"$\notacommand$"]
    rows = [",".join(f"{(i * (j + 3)) % 7 / 3:.3f}" for j in range(len(headers))) + f",{i % 2}" for i in range(40)]
    (tmp_path / "d.csv").write_text("\n".join([",".join([*headers, "y"]), *rows]) + "\n", encoding="utf-8")
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))  # the in-process runner reads its data dir here
    spec = make_spec("dollars")
    spec["dataset"] = {"source": "csv", "path": "d.csv", "target": "y"}
    spec["search"]["space"] = {"l1": {"low": 1e-3, "high": 1e-1, "log": True}}
    spec["search"]["stages"][1] |= {"params": ["l1"], "trials": 3}  # an L1 path: its plot draws user text too
    job = _submit(client, spec)
    assert runner.run_once()
    assert client.get(f"/jobs/{job}").json()["status"] == "succeeded"
    page = client.get(f"/jobs/{job}/report.html")
    assert page.status_code == 200 and page.text.count("data:image/png;base64,") == len(PLOTS)
    for name in PLOTS:
        r = client.get(f"/jobs/{job}/plots/{name}.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", (name, r.text[:200])
