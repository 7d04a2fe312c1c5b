"""A job's life over HTTP, against SQLite and PostgreSQL: queued → running → succeeded, its trials, its report."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from _gate import EpochGate
from _service import make_spec, wait_for, wait_status
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.settings import Settings
from api.worker import Runner
from tuner import Report


def submit(client: TestClient, spec: dict[str, Any], **headers: str) -> dict[str, Any]:
    r = client.post("/jobs", content=yaml.safe_dump(spec), headers={"content-type": "application/yaml", **headers})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/jobs/{r.json()['id']}"
    return r.json()


def test_job_goes_queued_running_succeeded_with_report(client: TestClient, runner: Runner, storage_url: str,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = submit(client, make_spec("life", epochs=3, trials=3))
    assert job["status"] == "queued" and job["attempts"] == 0
    assert client.get(f"/jobs/{job['id']}/report").status_code == 409

    gate = EpochGate(tmp_path / "gate", trial=2).install(monkeypatch)  # the first l2 trial waits to be seen
    thread = threading.Thread(target=runner.run_once)
    thread.start()
    gate.wait(alive=thread.is_alive)
    running = wait_status(client, job["id"], "running")
    assert running["stages"][1]["running"] == 1
    gate.release()
    thread.join()
    final = wait_status(client, job["id"], "succeeded")
    assert final["attempts"] == 1 and final["error"] is None and final["finished_at"] is not None
    assert [(s["name"], s["done"], s["total"], s["running"]) for s in final["stages"]] == [
        ("baseline", 1, 1, 0), ("l2", 3, 3, 0)]
    best = final["best"]
    assert best is not None and best["value"] == min(s["best_value"] for s in final["stages"])

    report = client.get(f"/jobs/{job['id']}/report").json()
    assert {"baseline", "chosen", "diagnosis", "stages"} <= report.keys()
    assert Report.model_validate(report).model_dump(mode="json") == report  # the documented model, nothing else
    assert [s["study_name"] for s in report["stages"]] == [f"life-{job['id']}/baseline", f"life-{job['id']}/l2"]
    stored = optuna.load_study(study_name=f"life-{job['id']}/l2", storage=storage_url)
    assert best["value"] <= stored.best_value


def test_trials_agree_with_optuna(client: TestClient, runner: Runner, storage_url: str) -> None:
    job = submit(client, make_spec("agree", epochs=3, trials=3))
    assert runner.run_once()
    body = client.get(f"/jobs/{job['id']}/trials").json()
    assert body["count"] == len(body["items"]) == 4
    for stage in ("baseline", "l2"):
        study = optuna.load_study(study_name=f"agree-{job['id']}/{stage}", storage=storage_url)
        ours = [t for t in body["items"] if t["stage"] == stage]
        theirs = study.get_trials()
        assert [t["number"] for t in ours] == [t.number for t in theirs]
        for mine, frozen in zip(ours, theirs, strict=True):
            assert mine["state"] == frozen.state.name
            assert mine["values"] == frozen.values
            assert mine["params"] == frozen.params
            assert mine["config"] == frozen.user_attrs["config"]
            for key in ("train_loss", "val_loss", "gap", "sparsity", "epochs"):
                assert mine[key] == frozen.user_attrs[key], key
            assert mine["train_curve"] is None
    curves = client.get(f"/jobs/{job['id']}/trials", params={"curves": "true", "stage": "l2"}).json()
    assert {t["stage"] for t in curves["items"]} == {"l2"} and len(curves["items"][0]["val_curve"]) == 3
    assert curves["items"][0]["train_curve"] is None  # search.train_curve is off: the kept epoch's train loss only
    assert client.get(f"/jobs/{job['id']}/trials", params={"state": "RUNNING"}).json()["count"] == 0


def test_list_filters_by_status_and_pages_newest_first(client: TestClient, runner: Runner) -> None:
    ids = [submit(client, make_spec(f"list{i}"))["id"] for i in range(3)]
    assert runner.run_once()  # the oldest runs first
    done = client.get("/jobs", params={"status": "succeeded"}).json()
    assert [j["id"] for j in done["items"]] == [ids[0]] and done["total"] == 1
    queued = client.get("/jobs", params={"status": "queued"}).json()
    assert [j["id"] for j in queued["items"]] == [ids[2], ids[1]]
    page = client.get("/jobs", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 3 and [j["id"] for j in page["items"]] == [ids[1], ids[0]]
    assert client.get("/jobs", params={"status": "sleeping"}).status_code == 422


def test_cancel_queued_job_never_starts(client: TestClient, runner: Runner, storage_url: str) -> None:
    job = submit(client, make_spec("never"))
    r = client.post(f"/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert runner.run_once() is False
    assert client.get(f"/jobs/{job['id']}").json()["stages"][0]["done"] == 0
    assert optuna.get_all_study_names(storage=storage_url) == []
    again = client.post(f"/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def test_cancel_running_job_stops_at_an_epoch_boundary(client: TestClient, runner: Runner, storage_url: str,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    job = submit(client, make_spec("stop", epochs=100, trials=50, hidden=[32], batch_size=8))
    gate = EpochGate(tmp_path / "gate", trial=2, epoch=3).install(monkeypatch)  # the first l2 trial, epoch 3
    thread = threading.Thread(target=runner.run_once)
    thread.start()
    gate.wait(alive=thread.is_alive)
    r = client.post(f"/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    # The runner sees the flag within its heartbeat tick; the trial then stops at the very next epoch boundary.
    wait_for(lambda: "stopping at the next epoch boundary (cancel)" in caplog.text, 60,
             what="the runner to see the cancel")
    gate.release()
    thread.join(60)
    assert not thread.is_alive()
    final = client.get(f"/jobs/{job['id']}").json()
    assert final["status"] == "cancelled"
    assert [s["done"] for s in final["stages"]] == [1, 0]  # the finished baseline trial stays
    study = optuna.load_study(study_name=f"stop-{job['id']}/l2", storage=storage_url)
    [stopped] = study.get_trials()
    assert stopped.state == optuna.trial.TrialState.FAIL and stopped.user_attrs["interrupted"] is True
    assert stopped.user_attrs["epochs"] == 3  # it stopped at the boundary it was held at, not one epoch later
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 409


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_job_past_its_deadline_fails_saying_why(client: TestClient, app: FastAPI, settings: Settings) -> None:
    job = submit(client, make_spec("late", epochs=3, trials=2))
    hasty = Runner(settings.model_copy(update={"max_job_seconds": 1e-3}), db=app.state.db)  # no job is done in 1 ms
    assert hasty.run_once()
    final = wait_status(client, job["id"], "failed")
    assert final["status"] == "failed"
    assert final["error"] == "the job ran longer than 0.001 s (REGTUNE_MAX_JOB_SECONDS) and was stopped"
