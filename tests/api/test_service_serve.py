"""``regtune serve`` as a user starts it: the API, its embedded runner, the dashboard; ``submit`` and ``status``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from _service import make_spec, regtune, wait_for, worker_env

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path) -> Iterator[str]:
    """A running ``regtune serve`` (with its runner) on a free port; its base URL."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([regtune(), "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env=worker_env(sqlite_url), cwd=tmp_path, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {(tmp_path / 'serve.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 120, every=0.5, what="regtune serve to answer /healthz")
    yield base
    os.killpg(proc.pid, signal.SIGTERM)  # serve and its runner, as Ctrl-C in a terminal would
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert "REGTUNE_API_TOKEN is not set: serving on 127.0.0.1 only" in (tmp_path / "serve.log").read_text()


def test_serve_runs_a_submitted_job_and_shows_the_dashboard(served: str, sqlite_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(make_spec("served", epochs=3, trials=2)))
    done = subprocess.run([regtune(), "submit", str(spec), "--server", served, "--wait", "--interval", "0.5"],
                          capture_output=True, text=True, timeout=300, env=worker_env(sqlite_url))
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.split()[1]
    assert "l2 2/2" in done.stdout and f"job {job_id} (served): succeeded" in done.stdout
    status = subprocess.run([regtune(), "status", job_id, "--server", served], capture_output=True, text=True,
                            timeout=60, env=worker_env(sqlite_url))
    assert status.returncode == 0 and "succeeded" in status.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\n")
    refused = subprocess.run([regtune(), "submit", str(bad), "--server", served], capture_output=True, text=True,
                             timeout=60, env=worker_env(sqlite_url))
    assert refused.returncode == 2 and "HTTP 422 invalid_spec" in refused.stderr
    assert "dataset: this field is required" in refused.stderr
    dashboard = httpx.get(f"{served}/dashboard", timeout=30)
    assert dashboard.status_code == 200 and "text/html" in dashboard.headers["content-type"]
    studies = httpx.get(f"{served}/api/studies", timeout=30).json()["study_summaries"]
    assert f"served-{job_id}/l2" in {s["study_name"] for s in studies}


def test_serve_refuses_other_hosts_without_a_token(sqlite_url: str) -> None:
    done = subprocess.run([regtune(), "serve", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60,
                          env=worker_env(sqlite_url))
    assert done.returncode == 2 and "refusing to serve on 0.0.0.0 without authentication" in done.stderr


def test_submit_says_when_the_server_is_unreachable(sqlite_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(make_spec()))
    done = subprocess.run([regtune(), "submit", str(spec), "--server", "http://127.0.0.1:9"], capture_output=True,
                          text=True, timeout=60, env=worker_env(sqlite_url))
    assert done.returncode == 2 and "cannot reach http://127.0.0.1:9" in done.stderr
