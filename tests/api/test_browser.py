"""The pages in a real browser: ``regtune serve`` runs a small job; headless Chromium loads the jobs page, the
job page and the Optuna dashboard. Each renders without console errors, draws its charts, and asks for
nothing outside 127.0.0.1. Screenshots go to ``test-artifacts/``.

Needs Debian's ``chromium`` and Playwright for Python (never its browser download): skipped without them,
failed without them under CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from _service import regtune, wait_for

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOCAL = {"127.0.0.1", "localhost"}
SPEC: dict[str, Any] = {
    "name": "browser",
    "dataset": {"source": "sklearn", "name": "iris"},
    "model": {"kind": "mlp", "hidden": [8]},
    "training": {"epochs": 6, "batch_size": 32, "lr": 0.02},
    "search": {
        "sampler": "random", "pruner": "none",
        "space": {"l1": {"low": 1.0e-4, "high": 1.0e-1, "log": True, "allow_zero": True},
                  "l2": {"low": 1.0e-5, "high": 1.0e-2, "log": True}},
        "stages": [{"name": "baseline", "params": [], "trials": 1},
                   {"name": "l2", "params": ["l2"], "trials": 3},
                   {"name": "joint", "params": ["l1", "l2"], "trials": 4}],
    },
    "report": {"top_k": 2, "seeds": 1},
}
PATH_SPEC: dict[str, Any] = {  # a linear model whose one stage walks the L1 path
    "name": "browser-path",
    "dataset": {"source": "sklearn", "name": "iris"},
    "model": {"kind": "linear"},
    "training": {"epochs": 200, "batch_size": 256, "lr": 0.05, "early_stopping": {"patience": 10}},
    "search": {"pruner": "none", "space": {"l1": {"low": 1.0e-4, "high": 1.0e-1, "log": True}},
               "stages": [{"name": "l1", "params": ["l1"], "trials": 8, "path_eps": 0.01}]},
    "report": {"top_k": 2, "seeds": 1, "choose": "one_se"},
}
# Each image drawn on a canvas: its size, and the spread of its pixels' brightness (0 for a blank image).
IMAGES_JS = """() => Array.from(document.images).map(img => {
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  if (!c.width || !c.height) return {alt: img.alt, width: 0, height: 0, spread: 0};
  const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0, sum = 0, sq = 0;
  for (let i = 0; i < px.length; i += 4 * 7) {
    const v = (px[i] + px[i + 1] + px[i + 2]) / 3; n++; sum += v; sq += v * v;
  }
  const spread = Math.sqrt(sq / n - (sum / n) ** 2);
  return {alt: img.alt, width: img.naturalWidth, height: img.naturalHeight, spread: spread};
})"""


def _chromium() -> str:
    """The system's Chromium; skip (or, under CI, fail) without it or without Playwright."""
    path = shutil.which("chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path, why = None, "Playwright for Python is not installed (pip install -e '.[dev]')"
    else:
        why = "no chromium on PATH (apt-get install chromium)"
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI needs it", pytrace=False)
        pytest.skip(why)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``regtune serve`` (API, runner, dashboard) over a fresh SQLite file; its base URL."""
    yield from _serve(tmp_path_factory.mktemp("browser"))


def _serve(tmp: Path, **extra_env: str) -> Iterator[str]:
    _chromium()  # no browser: do not pay for a service
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGTUNE_")}
    env |= {"REGTUNE_DATABASE_URL": f"sqlite:///{tmp}/regtune.db", "REGTUNE_POLL_SECONDS": "0.2"} | extra_env
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([regtune(), "serve", "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    headers = {"Authorization": f"Bearer {extra_env['REGTUNE_API_TOKEN']}"} if extra_env else {}

    def healthy() -> bool:
        assert proc.poll() is None, f"regtune serve exited:\n{log.read_text()[-3000:]}"
        try:
            return httpx.get(f"{base}/healthz", timeout=2, headers=headers).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=120, every=0.5, what="regtune serve to answer /healthz")
        yield base
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C for ``serve`` (it stops its runner), then anything left in its process group."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # the group is serve's alone (start_new_session)
        except ProcessLookupError:
            return
        time.sleep(5)


def _run(service: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Submit ``spec`` and wait until the service has run it to the end."""
    r = httpx.post(f"{service}/jobs", json=spec, timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(f"{service}/jobs/{job_id}", timeout=30).json()
        return body if body["status"] not in ("queued", "running") else None

    done = wait_for(finished, timeout=240, every=1.0, what=f"job {job_id} to finish")
    assert done["status"] == "succeeded", done
    return done


@pytest.fixture(scope="module")
def job(service: str) -> dict[str, Any]:
    """A small job, run by the service to the end."""
    return _run(service, SPEC)


@pytest.fixture(scope="module")
def path_job(service: str) -> dict[str, Any]:
    """A small job whose one stage is an L1 path, run by the service to the end."""
    return _run(service, PATH_SPEC)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """A page loaded in the browser, and everything it asked for or complained about."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        """Requests for anything but this machine (data: URIs are part of the page itself)."""
        return [u for u in self.requests if urlsplit(u).scheme not in ("data", "blob", "about")
                and urlsplit(u).hostname not in LOCAL]


@pytest.fixture
def visit(browser: Any) -> Iterator[Any]:
    pages: list[Any] = []

    def load(url: str, shot: str, ready: str | None = None) -> Visit:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        pages.append(page)
        seen = Visit(page)
        page.on("request", lambda r: seen.requests.append(r.url))
        page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen.errors.append(str(e)))
        response = page.goto(url, wait_until="networkidle", timeout=90_000)
        assert response is not None and response.ok, f"{url}: {response and response.status}"
        if ready:
            page.wait_for_selector(ready, timeout=60_000)
            page.wait_for_load_state("networkidle")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
        return seen

    yield load
    for page in pages:
        page.close()


def test_jobs_page(service: str, job: dict[str, Any], visit: Any) -> None:
    seen = visit(f"{service}/", "jobs-page")
    assert seen.errors == [] and seen.outside() == []
    row = seen.page.locator("tr", has_text=job["id"])
    assert "succeeded" in row.inner_text() and "8/8 trials" in row.inner_text()
    assert row.locator(f'a[href="/jobs/{job["id"]}/report.html"]').count() == 1
    assert row.locator('a[href^="/dashboard/studies/"]').all_inner_texts() == ["baseline", "l2", "joint"]


def test_job_page_draws_every_chart(service: str, job: dict[str, Any], visit: Any) -> None:
    seen = visit(f"{service}/jobs/{job['id']}/report.html", "job-page")
    assert seen.errors == [] and seen.outside() == []
    assert "Without regularization the model reaches val loss" in seen.page.inner_text(".verdict")
    images = seen.page.evaluate(IMAGES_JS)
    drawn = {img["alt"] for img in images
             if img["width"] >= 600 and img["height"] >= 150 and img["spread"] > 10}
    assert drawn == {img["alt"] for img in images}, images
    assert {"learning curves", "pareto", "history", "knobs", "candidates", "sparsity", "features"} <= drawn


def test_dashboard_shows_the_studies_with_their_metadata(service: str, job: dict[str, Any],
                                                         visit: Any) -> None:
    prefix = job["study_prefix"]
    seen = visit(f"{service}/dashboard", "dashboard", ready=f"text={prefix}/joint")
    assert seen.errors == [] and seen.outside() == []
    assert all(f"{prefix}/{stage}" in seen.page.inner_text("body") for stage in ("baseline", "l2", "joint"))

    summaries = httpx.get(f"{service}/api/studies", timeout=30).json()["study_summaries"]
    sid = next(s["study_id"] for s in summaries if s["study_name"] == f"{prefix}/joint")
    study = visit(f"{service}/dashboard/studies/{sid}", "dashboard-study", ready=".main-svg")
    assert study.errors == [] and study.outside() == []
    text = study.page.inner_text("body")
    assert "val_loss" in text  # the objective's name, not "Objective 0"
    for row in ("job\tbrowser", "stage\tjoint", 'params\t["l1", "l2"]'):  # the study's user attrs
        assert row in text, f"study user attribute {row!r} not shown"
    assert study.page.locator(".main-svg").count() >= 2  # plotly drew the history and the importances

    trials = visit(f"{service}/dashboard/studies/{sid}/trials", "dashboard-trials",
                   ready="text=User Attributes")
    assert trials.errors == [] and trials.outside() == []
    body = trials.page.inner_text("body")
    for key in ("train_loss", "val_loss", "gap", "sparsity"):
        assert key in body, f"trial user attr {key!r} not shown"


TOKEN = "browser-login-token-0123456789"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``regtune serve`` with a token, and one small job run to the end; its base URL."""
    yield from _serve(tmp_path_factory.mktemp("secured"), REGTUNE_API_TOKEN=TOKEN)


def test_login_with_the_token_then_every_page(secured: str, browser: Any) -> None:
    """The token is typed once; the session cookie opens the jobs page, a job's page and the dashboard."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    spec = {**SPEC, "name": "secured", "search": {**SPEC["search"], "stages": SPEC["search"]["stages"][:2]}}
    job = httpx.post(f"{secured}/jobs", json=spec, headers=auth, timeout=30).json()
    wait_for(lambda: httpx.get(f"{secured}/jobs/{job['id']}", headers=auth, timeout=30).json()["status"]
             == "succeeded", timeout=240, every=1.0, what="the secured job to succeed")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{secured}/jobs/{job['id']}/report.html", wait_until="networkidle", timeout=90_000)
        assert urlsplit(page.url).path == "/login"  # not logged in: the login page, not a bare 401
        page.fill('input[name="token"]', "a-wrong-token-of-some-length")
        page.click('button[type="submit"]')
        assert "That token is wrong" in page.inner_text("body")
        assert errors == ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
        errors.clear()
        page.fill('input[name="token"]', TOKEN)
        page.click('button[type="submit"]')
        page.wait_for_load_state("networkidle")
        assert urlsplit(page.url).path == f"/jobs/{job['id']}/report.html"  # back where the user was headed
        assert "Without regularization the model reaches val loss" in page.inner_text(".verdict")
        [cookie] = context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
        page.goto(f"{secured}/", wait_until="networkidle", timeout=90_000)
        assert "succeeded" in page.locator("tr", has_text=job["id"]).inner_text()
        page.goto(f"{secured}/dashboard", wait_until="networkidle", timeout=90_000)
        page.wait_for_selector(f"text={job['study_prefix']}/l2", timeout=60_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-logged-in.png"), full_page=True)
        assert errors == []  # the Content-Security-Policy blocked nothing the pages need
        page.goto(f"{secured}/", wait_until="networkidle", timeout=90_000)
        page.click('button:has-text("Log out")')  # a form POST from the page itself: same-origin
        page.wait_for_load_state("networkidle")
        assert urlsplit(page.url).path == "/login" and context.cookies() == []
        page.goto(f"{secured}/", wait_until="networkidle", timeout=90_000)
        assert urlsplit(page.url).path == "/login"
    finally:
        context.close()


@pytest.mark.parametrize(("path", "ready"), [
    ("/docs", ".opblock-summary-path"),  # Swagger UI's list of operations
    ("/redoc", "[data-section-id^='tag/jobs']"),  # ReDoc's menu of operations
])
def test_api_docs_render_offline(service: str, browser: Any, path: str, ready: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    refused: list[str] = []

    def offline(route: Any) -> None:  # every request outside this machine fails, as on a machine without internet
        if urlsplit(route.request.url).hostname in LOCAL:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    try:
        page.route("**/*", offline)
        response = page.goto(f"{service}{path}", wait_until="networkidle", timeout=90_000)
        assert response is not None and response.ok
        page.wait_for_selector(ready, timeout=60_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"api{path.replace('/', '-')}.png"), full_page=False)
        # ReDoc's "by Redocly" attribution loads its logo from its CDN and hides it when that fails: it is the
        # one request allowed out, and it was refused like any other
        assert [u for u in refused if u != "https://cdn.redoc.ly/redoc/logo-mini.svg"] == []
        text = page.inner_text("body")
        assert "/jobs/{job_id}/trials" in text or "List Jobs" in text
    finally:
        page.close()


def test_job_page_shows_the_l1_path_and_the_cost_table(service: str, path_job: dict[str, Any],
                                                        visit: Any) -> None:
    seen = visit(f"{service}/jobs/{path_job['id']}/report.html", "job-page-l1-path")
    assert seen.errors == [] and seen.outside() == []
    images = {img["alt"]: img for img in seen.page.evaluate(IMAGES_JS)}
    path = images["l1 path"]
    assert path["width"] >= 600 and path["height"] >= 150 and path["spread"] > 10, path
    assert "The L1 path" in seen.page.inner_text("#l1_path figcaption")
    rows = [r.split("\t") for r in seen.page.locator("#cost tr").all_inner_texts()]
    assert rows[0][:2] == ["stage", "trials"] and "epochs run / budgeted" in rows[0]
    assert [r[0] for r in rows[1:]] == ["baseline", "l1", "re-training over seeds", "total"]
    assert rows[2][1] == "8"  # the path's eight points, one trial each
    report = httpx.get(f"{service}/jobs/{path_job['id']}/report", timeout=30).json()
    assert len(report["l1_path"]) == 8 and report["l1_path"][0]["features_kept"] == 0
