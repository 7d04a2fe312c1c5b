"""Leases under stress, on SQLite and PostgreSQL: a heartbeat that meets any error, a runner whose clock is
fast, and a reclaimer that must fail only the lost runner's trials, never those of the job's next owner."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import optuna
import pytest
from _service import make_spec, wait_for
from optuna.trial import TrialState

from api import repository
from api.db import Database
from api.settings import Settings
from api.tables import JobStatus, utcnow
from api.worker import Runner, queue
from api.worker.lease import CANCEL, LOST, Lease
from tuner import parse_spec, study_name


def queue_one(db: Database) -> str:
    with db.session() as session:
        return repository.create_job(session=session, spec=parse_spec(make_spec("lease")))[0].id


def claim(db: Database, owner: str, lease_seconds: float) -> None:
    with db.session() as session:
        assert queue.claim_job(session=session, owner=owner, lease_seconds=lease_seconds) is not None


def lease_for(db: Database, job_id: str, lease_seconds: float) -> Lease:
    return Lease(db, job_id=job_id, owner="a", lease_seconds=lease_seconds, heartbeat_seconds=0.2,
                 shutdown=threading.Event())


def test_the_heartbeat_survives_any_error(db: Database, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    job_id = queue_one(db)
    claim(db, "a", lease_seconds=60)
    calls: list[int] = []
    real = queue.read_cancel

    def flaky(**kwargs: Any) -> bool | None:
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("a bug in one beat")  # not a database error
        return real(**kwargs)

    monkeypatch.setattr("api.worker.lease.read_cancel", flaky)
    caplog.set_level(logging.INFO, logger="api.worker.lease")
    with lease_for(db, job_id, lease_seconds=60) as lease:
        wait_for(lambda: len(calls) > 4, 60, what="the heartbeat to beat on after its errors")
        assert not lease.should_stop()
        with db.session() as session:
            repository.cancel_job(session=session, job_id=job_id)
        wait_for(lease.should_stop, 60, what="the cancel to reach the job through the heartbeat")
        assert lease.reason == CANCEL
    assert "a bug in one beat" in caplog.text and "works again after 3 failure(s)" in caplog.text


def test_a_heartbeat_that_keeps_failing_stops_the_job_once_the_lease_runs_out(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = queue_one(db)
    claim(db, "a", lease_seconds=60)

    def broken(**kwargs: Any) -> bool | None:
        raise ValueError("always")

    monkeypatch.setattr("api.worker.lease.read_cancel", broken)
    with lease_for(db, job_id, lease_seconds=1) as lease:
        wait_for(lease.should_stop, 60, what="the job to stop once its lease ran out")
        assert lease.reason == LOST


def test_a_runner_with_a_fast_clock_does_not_take_a_healthy_runners_job(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = queue_one(db)
    claim(db, "healthy", lease_seconds=10)
    fast = lambda: utcnow() + timedelta(seconds=30)  # noqa: E731 - this runner's clock, 30 s ahead
    monkeypatch.setattr("api.worker.queue.utcnow", fast, raising=False)
    monkeypatch.setattr("api.tables.utcnow", fast)
    with db.session() as session:
        assert queue.requeue_expired(session=session, max_attempts=3) == []
        assert queue.renew_lease(session=session, job_id=job_id, owner="healthy", lease_seconds=10)
    with db.session() as session:
        row = repository.get_job(session=session, job_id=job_id)
    assert row.status == JobStatus.RUNNING and row.lease_owner == "healthy"
    assert row.lease_expires_at is not None and row.lease_expires_at < utcnow() + timedelta(seconds=25)


def test_the_reclaimer_fails_only_the_lost_runners_trials(db: Database, storage_url: str) -> None:
    job_id = queue_one(db)
    claim(db, "lost", lease_seconds=-1)  # its lease has run out
    with db.session() as session:
        row = repository.get_job(session=session, job_id=job_id)
    study = optuna.create_study(study_name=study_name(row.study_prefix, "baseline"), storage=storage_url)
    trials = {owner: study.ask() for owner in ("lost", "next", None)}
    for owner, trial in trials.items():
        if owner is not None:
            trial.set_user_attr("runner", owner)
    settings = Settings(database_url=storage_url, api_token=None, lease_seconds=5, heartbeat_seconds=1)
    Runner(settings, db=db).reclaim()
    states = {owner: study.get_trials(deepcopy=False)[t.number] for owner, t in trials.items()}
    assert states["next"].state == TrialState.RUNNING  # another runner's trial: never touched
    assert states["lost"].state == states[None].state == TrialState.FAIL
    assert states["lost"].user_attrs["interrupted"] is True
    with db.session() as session:
        assert repository.get_job(session=session, job_id=job_id).status == JobStatus.QUEUED


def test_trials_carry_the_runner_that_ran_them(db: Database, storage_url: str) -> None:
    queue_one(db)
    settings = Settings(database_url=storage_url, api_token=None, lease_seconds=30, heartbeat_seconds=1)
    runner = Runner(settings, db=db)
    assert runner.run_once()
    [row], _ = repository.list_jobs(session=db.sessions(), limit=1)
    assert row.status == JobStatus.SUCCEEDED, row.error
    for stage in ("baseline", "l2"):
        study = optuna.load_study(study_name=study_name(row.study_prefix, stage), storage=storage_url)
        assert {t.user_attrs.get("runner") for t in study.get_trials()} == {runner.owner}
