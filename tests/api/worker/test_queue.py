"""The jobs table under the runners, one suite for SQLite and PostgreSQL: claims, leases, expiry, races."""

from __future__ import annotations

import threading

import pytest
from _service import make_spec, wait_for

from api import repository
from api.db import Database
from api.tables import JobRow, JobStatus
from api.worker import STALLED, Lease, queue
from tuner import parse_spec


def queued(db: Database, n: int) -> list[str]:
    with db.session() as session:
        return [repository.create_job(session=session, spec=parse_spec(make_spec(f"q{i}")))[0].id for i in range(n)]


def claim(db: Database, owner: str, lease_seconds: float = 60) -> JobRow | None:
    with db.session() as session:
        return queue.claim_job(session=session, owner=owner, lease_seconds=lease_seconds)


def read(db: Database, job_id: str) -> JobRow:
    with db.session() as session:
        return repository.get_job(session=session, job_id=job_id)


def test_claims_take_the_oldest_and_hold_a_lease(db: Database) -> None:
    first, second = queued(db, 2)
    a = claim(db, "a")
    assert a is not None and a.id == first and a.status == JobStatus.RUNNING and a.attempts == 1
    assert a.lease_owner == "a" and a.lease_expires_at is not None and a.started_at is not None
    b = claim(db, "b")
    assert b is not None and b.id == second
    assert claim(db, "c") is None
    with db.session() as session:
        assert queue.renew_lease(session=session, job_id=first, owner="a", lease_seconds=60)
        assert not queue.renew_lease(session=session, job_id=first, owner="b", lease_seconds=60)
        assert queue.read_cancel(session=session, job_id=first, owner="a") is False
        assert queue.read_cancel(session=session, job_id=first, owner="b") is None
        assert not queue.finish_job(session=session, job_id=first, owner="b", status=JobStatus.SUCCEEDED)
        assert queue.finish_job(session=session, job_id=first, owner="a", status=JobStatus.SUCCEEDED,
                                report={"diagnosis": "ok"})
    done = read(db, first)
    assert done.status == JobStatus.SUCCEEDED and done.report == {"diagnosis": "ok"} and done.finished_at


def test_expired_leases_requeue_then_fail_after_max_attempts(db: Database) -> None:
    [job_id] = queued(db, 1)
    assert claim(db, "a", lease_seconds=0) is not None  # expires at once
    with db.session() as session:
        [expired] = queue.requeue_expired(session=session, max_attempts=2)
    assert expired.status == JobStatus.QUEUED and expired.lost_owner == "a"
    row = read(db, job_id)
    assert row.status == JobStatus.QUEUED and row.attempts == 1 and row.lease_expires_at is None
    assert "lease of runner a expired" in (row.error or "")
    again = claim(db, "b", lease_seconds=-1)
    assert again is not None and again.attempts == 2
    with db.session() as session:
        [expired] = queue.requeue_expired(session=session, max_attempts=2)
        assert queue.requeue_expired(session=session, max_attempts=2) == []
    row = read(db, job_id)
    assert expired.status == row.status == JobStatus.FAILED and row.finished_at is not None
    assert "max_attempts is 2" in (row.error or "") and "b" in (row.error or "")


def test_live_leases_are_left_alone_and_cancel_wins_over_requeue(db: Database) -> None:
    live, dead = queued(db, 2)
    assert claim(db, "a") is not None and claim(db, "b", lease_seconds=0) is not None
    with db.session() as session:
        repository.cancel_job(session=session, job_id=dead)
        [expired] = queue.requeue_expired(session=session, max_attempts=3)
    assert expired.id == dead and read(db, dead).status == JobStatus.CANCELLED
    assert read(db, live).status == JobStatus.RUNNING


def test_release_gives_the_attempt_back(db: Database) -> None:
    [job_id] = queued(db, 1)
    assert claim(db, "a") is not None
    with db.session() as session:
        assert queue.release_job(session=session, job_id=job_id, owner="a", reason="shutdown")
    row = read(db, job_id)
    assert row.status == JobStatus.QUEUED and row.attempts == 0 and row.lease_expires_at is None


def test_cancel_reaches_a_running_job_through_its_lease(db: Database) -> None:
    [job_id] = queued(db, 1)
    assert claim(db, "a") is not None
    with db.session() as session:
        assert repository.cancel_job(session=session, job_id=job_id).cancel_requested
        assert queue.read_cancel(session=session, job_id=job_id, owner="a") is True
    assert read(db, job_id).status == JobStatus.RUNNING  # until its runner stops it


def test_racing_claims_take_each_job_exactly_once(db: Database) -> None:
    ids = queued(db, 30)
    taken: dict[str, list[str]] = {}
    lock = threading.Lock()

    def claimer(owner: str) -> None:
        while (row := claim(db, owner)) is not None:
            with lock:
                taken.setdefault(row.id, []).append(owner)

    threads = [threading.Thread(target=claimer, args=(f"r{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)
    assert all(len(owners) == 1 for owners in taken.values()), taken


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_job_that_makes_no_progress_stops_renewing_its_lease(db: Database) -> None:
    [stuck_id, busy_id] = queued(db, 2)
    assert claim(db, "stuck") is not None and claim(db, "busy") is not None
    claimed = read(db, busy_id).lease_expires_at
    stuck = Lease(db, job_id=stuck_id, owner="stuck", lease_seconds=60, heartbeat_seconds=0.05,
                  shutdown=threading.Event(), stall_seconds=0.2)  # never asks should_stop(): no sign of life
    busy = Lease(db, job_id=busy_id, owner="busy", lease_seconds=60, heartbeat_seconds=0.05,
                 shutdown=threading.Event(), stall_seconds=30)
    done = threading.Event()

    def training() -> None:  # asks at every batch, as the training loop does
        while not done.wait(0.01):
            busy.should_stop()

    with stuck, busy:
        threading.Thread(target=training, daemon=True).start()
        wait_for(lambda: stuck.reason == STALLED, 30, what="the stuck job's lease to see the stall")
        last = read(db, stuck_id).lease_expires_at
        wait_for(lambda: read(db, busy_id).lease_expires_at != claimed, 30, what="the busy job's lease renewed")
        done.set()
    assert read(db, stuck_id).lease_expires_at == last  # no renewal after the stall: it expires, and is taken back
    assert stuck.should_stop() and busy.reason is None
