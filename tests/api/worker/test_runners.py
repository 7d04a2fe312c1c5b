"""Runners as real processes: killed outright, stopped politely, racing each other over a queue."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from _gate import EpochGate
from _service import make_spec, start_worker, wait_for, wait_status
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from api import repository
from api.db import Database, migrate
from api.worker import Runner
from tuner import parse_spec

pytestmark = pytest.mark.slow
Workers = list[subprocess.Popen[bytes]]


def stage_states(storage_url: str, prefix: str, stages: list[str]) -> dict[str, list[TrialState]]:
    return {s: [t.state for t in optuna.load_study(study_name=f"{prefix}/{s}", storage=storage_url).get_trials()]
            for s in stages}


def test_killed_runner_is_replaced_after_its_lease_expires(client: TestClient, storage_url: str, tmp_path: Path,
                                                          workers: Workers) -> None:
    job = client.post("/jobs", json=make_spec("crash", epochs=30, trials=5, hidden=[32], batch_size=8)).json()
    gate = EpochGate(tmp_path / "gate", trial=3, epoch=2)  # runner A's 3rd trial waits after epoch 2
    workers.append(start_worker(storage_url, tmp_path / "a.log", gate))
    gate.wait(alive=lambda: workers[0].poll() is None)
    os.killpg(workers[0].pid, signal.SIGKILL)
    workers[0].wait()
    workers.append(start_worker(storage_url, tmp_path / "b.log"))
    final = wait_status(client, job["id"], "succeeded", "failed", timeout=240)
    assert final["status"] == "succeeded", final["error"]
    assert final["attempts"] == 2
    states = stage_states(storage_url, final["study_prefix"], ["baseline", "l2"])
    assert [states[s].count(TrialState.COMPLETE) for s in ("baseline", "l2")] == [1, 5]  # nothing lost, no extra
    assert all(TrialState.RUNNING not in v for v in states.values())
    interrupted = [t for t in client.get(f"/jobs/{job['id']}/trials").json()["items"] if t["interrupted"]]
    assert len(interrupted) == 1 and interrupted[0]["state"] == "FAIL"
    assert "expired" in (tmp_path / "b.log").read_text()


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_sigterm_finishes_the_epoch_and_gives_the_job_back(client: TestClient, runner: Runner, storage_url: str,
                                                          tmp_path: Path, workers: Workers) -> None:
    job = client.post("/jobs", json=make_spec("polite", epochs=60, trials=3, hidden=[32], batch_size=8)).json()
    gate = EpochGate(tmp_path / "gate", trial=2, epoch=2)  # the worker's 2nd trial waits after epoch 2
    workers.append(start_worker(storage_url, tmp_path / "w.log", gate))
    gate.wait(alive=lambda: workers[0].poll() is None)
    workers[0].send_signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received" in (tmp_path / "w.log").read_text(), 60, what="the worker to take SIGTERM")
    gate.release()
    assert workers[0].wait(60) == 0
    back = wait_status(client, job["id"], "queued")
    assert back["status"] == "queued" and back["attempts"] == 0 and back["lease_expires_at"] is None
    assert "released" in back["error"]
    trials = client.get(f"/jobs/{job['id']}/trials").json()["items"]
    assert [(t["state"], t["epochs"]) for t in trials if t["interrupted"]] == [("FAIL", 2)]  # at that boundary
    assert all(t["state"] != "RUNNING" for t in trials)
    assert runner.run_once()  # another runner resumes it
    final = wait_status(client, job["id"], "succeeded")
    assert final["status"] == "succeeded" and [s["done"] for s in final["stages"]] == [1, 3]


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_second_sigterm_exits_now_even_while_a_trial_is_held(client: TestClient, storage_url: str, tmp_path: Path,
                                                              workers: Workers) -> None:
    client.post("/jobs", json=make_spec("impatient", epochs=60, trials=3, hidden=[32], batch_size=8))
    gate = EpochGate(tmp_path / "gate", trial=2, epoch=2)  # held until the end: no epoch boundary ever comes
    workers.append(start_worker(storage_url, tmp_path / "w.log", gate))
    gate.wait(alive=lambda: workers[0].poll() is None)
    workers[0].send_signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received" in (tmp_path / "w.log").read_text(), 60, what="the worker to take SIGTERM")
    workers[0].send_signal(signal.SIGTERM)
    assert workers[0].wait(60) == 130  # the held trial never reaches a boundary: only the second signal ends it


@pytest.mark.postgres
def test_two_runners_race_over_30_jobs_and_run_each_once(postgres_url: str, tmp_path: Path,
                                                         workers: Workers) -> None:
    db = Database.open(postgres_url)
    migrate(db)
    lease = {"REGTUNE_LEASE_SECONDS": "30", "REGTUNE_HEARTBEAT_SECONDS": "2"}  # no expiry on a busy machine
    workers.extend(start_worker(postgres_url, tmp_path / f"{n}.log", **lease) for n in ("a", "b"))
    wait_for(lambda: all("waiting for jobs" in (tmp_path / f"{n}.log").read_text() for n in ("a", "b")), 120,
             every=0.5, what="both runners to be ready")  # then the queue fills: a race from the first job
    with db.session() as session:
        ids = [repository.create_job(session=session, spec=parse_spec(make_spec(f"race{i}")))[0].id
               for i in range(30)]

    def all_done() -> bool:
        with db.session() as session:
            rows, _ = repository.list_jobs(session=session, limit=100)
        return all(r.status not in ("queued", "running") for r in rows)

    wait_for(all_done, 300, every=1, what="the 30 jobs to finish")
    with db.session() as session:
        rows = [repository.get_job(session=session, job_id=i) for i in ids]
    assert {r.status for r in rows} == {"succeeded"}, {r.id: r.error for r in rows if r.error}
    assert {r.attempts for r in rows} == {1}
    logs = {n: (tmp_path / f"{n}.log").read_text() for n in ("a", "b")}
    assert all(logs["a"].count(f"claimed job {i} ") + logs["b"].count(f"claimed job {i} ") == 1 for i in ids)
    assert all("claimed job" in log for log in logs.values())  # a race indeed: both runners took jobs
    for row in rows:  # one trial per stage: no runner ever ran a stage a second time
        states = stage_states(postgres_url, row.study_prefix, ["baseline", "l2"])
        assert states == {"baseline": [TrialState.COMPLETE], "l2": [TrialState.COMPLETE]}
    db.close()
