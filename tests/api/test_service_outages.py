"""Runners that never silently die: a PostgreSQL restart in the middle of the work, a runner killed under
``regtune serve``, and ``/readyz`` telling when queued jobs have nobody to run them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import optuna
import pytest
from _gate import EpochGate
from _postgres import PostgresServer
from _service import make_spec, regtune, start_worker, wait_for, worker_env
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from api import repository
from api.db import Database, migrate
from api.runners_table import see_runner
from api.tables import JobStatus
from tuner import parse_spec, study_name

Workers = list[subprocess.Popen[bytes]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_readyz_degrades_when_jobs_wait_and_no_runner_was_seen(client: TestClient, storage_url: str) -> None:
    assert client.get("/readyz").json() == {"status": "ready", "queued": 0, "runners": 0}
    client.post("/jobs", json=make_spec())
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_runner"
    assert "1 job(s) queued, and no runner was seen" in r.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200  # alive, but not ready
    with client.app.state.db.session() as session:  # type: ignore[attr-defined]
        see_runner(session=session, runner="somewhere:1:abc")
    assert client.get("/readyz").json() == {"status": "ready", "queued": 1, "runners": 1}


@pytest.mark.slow
@pytest.mark.postgres
def test_a_postgres_restart_while_jobs_run_and_wait(postgres_server: PostgresServer, postgres_url: str,
                                                    tmp_path: Path, workers: Workers) -> None:
    """Every job completes once the database is back, none runs a trial twice, no trial is left RUNNING."""
    db = Database.open(postgres_url)
    migrate(db)
    with db.session() as session:
        ids = [repository.create_job(session=session, spec=parse_spec(make_spec(f"outage{i}", epochs=3,
                                                                                 trials=2)))[0].id
               for i in range(3)]
    gate = EpochGate(tmp_path / "gate", trial=2, epoch=1)  # the first job's l2 trial waits after epoch 1
    log, late = tmp_path / "worker.log", tmp_path / "late.log"
    workers.append(start_worker(postgres_url, log, gate))
    gate.wait(alive=lambda: workers[0].poll() is None)
    postgres_server.stop()  # one job running, two queued
    try:
        gate.release()
        wait_for(lambda: "the database is still unavailable" in log.read_text(), 120, every=0.2,
                 what="the runner to meet the outage")
        workers.append(start_worker(postgres_url, late))  # a runner that starts while the database is away
        wait_for(lambda: "the database is unavailable" in late.read_text(), 120, every=0.2,
                 what="the second runner to meet the outage")
        assert [w.poll() for w in workers] == [None, None], log.read_text()[-3000:]  # they wait; they do not exit
    finally:
        postgres_server.start()

    def finished() -> list[JobStatus] | None:
        with db.session() as session:
            rows = [repository.get_job(session=session, job_id=i) for i in ids]
        statuses = [JobStatus(r.status) for r in rows]
        return statuses if all(s not in (JobStatus.QUEUED, JobStatus.RUNNING) for s in statuses) else None

    statuses = wait_for(finished, 300, every=0.5, what="every job to end after the restart")
    with db.session() as session:
        rows = [repository.get_job(session=session, job_id=i) for i in ids]
    assert statuses == [JobStatus.SUCCEEDED] * 3, {r.id: r.error for r in rows}
    # the running job: given back (attempt not counted) or, its lease run out meanwhile, taken back once
    assert rows[0].attempts in (1, 2) and [r.attempts for r in rows[1:]] == [1, 1]
    assert [w.poll() for w in workers] == [None, None]  # the same runners, still there
    assert "giving it back to the queue" in log.read_text()  # logged as the job broke, before "still unavailable"
    # the second runner says so at its next try, after its backoff: the first may have ended every job before it
    wait_for(lambda: "the database answers again" in late.read_text(), 120, every=0.2,
             what="the second runner to find the database again")
    text = log.read_text() + late.read_text()
    for row in rows:
        states = {stage: [t.state for t in optuna.load_study(study_name=study_name(row.study_prefix, stage),
                                                             storage=postgres_url).get_trials()]
                  for stage in ("baseline", "l2")}
        assert all(TrialState.RUNNING not in v for v in states.values()), (row.id, states)
        assert [states[s].count(TrialState.COMPLETE) for s in ("baseline", "l2")] == [1, 2], (row.id, states)
        assert len(re.findall(rf"job {row.id}: succeeded", text)) == 1  # recorded once
    db.close()


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running ``regtune serve`` with its runner; its base URL and its log."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([regtune(), "serve", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=worker_env(sqlite_url), cwd=tmp_path, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 120, every=0.5, what="regtune serve to answer /healthz")
        yield base, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_serve_replaces_a_runner_killed_outright(served: tuple[str, Path]) -> None:
    base, log = served
    first = int(wait_for(lambda: re.search(r"started the embedded runner \(pid (\d+)\)", log.read_text()), 60,
                         what="serve to start its runner").group(1))
    wait_for(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200 and "waiting for jobs" in
             log.read_text(), 120, every=0.5, what="the runner to be seen")
    os.kill(first, signal.SIGKILL)
    second = int(wait_for(lambda: re.search(r"started a new embedded runner \(pid (\d+)\)", log.read_text()), 60,
                          what="serve to start another runner").group(1))
    assert second != first and "killed by SIGKILL" in log.read_text()
    job = httpx.post(f"{base}/jobs", json=make_spec("after-kill"), timeout=30).json()

    def ended() -> str | None:
        status: str = httpx.get(f"{base}/jobs/{job['id']}", timeout=30).json()["status"]
        return status if status not in ("queued", "running") else None

    assert wait_for(ended, 240, every=0.5, what="the job to be run by the new runner") == "succeeded"
