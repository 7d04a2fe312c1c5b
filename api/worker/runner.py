"""The runner: a process that claims queued jobs one at a time and runs them with ``tuner.run_job``.

Run as many as you like, on any machine that reaches the database (``regtune
worker``). A runner killed outright loses its lease; the next runner to look
takes the job back, marks the dead runner's unfinished trials failed
(``interrupted``) and resumes it: completed trials count toward each stage's budget.
SIGTERM or SIGINT stops the job at its next epoch boundary and gives it back to the queue.
A database that goes away does not end a runner: it waits and tries again (``api.resilience``),
and a job that broke on the database goes back to the queue instead of failing.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import FrameType

import optuna

from api.db import Database, migrate
from api.errors import json_safe
from api.model_files import pack_model
from api.resilience import Backoff, is_database_error
from api.runners_table import forget_runner, register_runner, see_runner
from api.settings import Settings
from api.spec_body import job_limits
from api.studies import stage_studies
from api.tables import JobRow, JobStatus
from api.worker.lease import CANCEL, LOST, STALLED, Lease
from api.worker.queue import Expired, claim_job, finish_job, release_job, requeue_expired
from tuner import Cancelled, RegtuneError, Report, SpecError, open_storage, parse_spec, run_job
from tuner.search import fail_interrupted

__all__ = ["Runner"]

log = logging.getLogger(__name__)

RETRY_CAP_S = 30.0  # the longest a runner waits between tries while the database is away


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class Runner:
    """Claims and runs jobs until ``shutdown`` is set."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db or Database.open(settings.database_url)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.shutdown = threading.Event()
        self._seen_at = -float("inf")  # when this runner last wrote its last-seen time (time.monotonic())

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the current epoch, give the job back, exit. A second one exits now."""
        def handle(signum: int, frame: FrameType | None) -> None:
            if self.shutdown.is_set():  # a second signal: exit now, wherever the job is (a stuck read, say);
                # its lease runs out and the next runner takes the job back, failing its trial as interrupted.
                log.warning("runner %s: %s received again; exiting now", self.owner, signal.Signals(signum).name)
                logging.shutdown()
                os._exit(130)  # not an exception: threads still training would abort the interpreter's exit
            log.info("runner %s: %s received; stopping (a job in hand stops at its next epoch boundary and "
                     "goes back to the queue)", self.owner, signal.Signals(signum).name)
            self.shutdown.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run_forever(self) -> None:
        """Run jobs until ``shutdown``; errors (the database away, a bug) are logged and retried, never fatal."""
        backoff = Backoff(cap=RETRY_CAP_S)
        started = False
        while not self.shutdown.is_set():
            try:
                if not started:
                    migrate(self.db)
                    with self.db.session() as session:
                        register_runner(session=session, runner=self.owner)
                    log.info("runner %s: waiting for jobs in %s", self.owner,
                             self.db.engine.url.render_as_string(hide_password=True))
                    started = True
                busy = self.run_once()
            except Exception as exc:
                delay = backoff.next()
                if is_database_error(exc):
                    log.warning("runner %s: the database is unavailable (%s); trying again in %.0fs (%d failed "
                                "tries in a row)", self.owner, _first_line(exc), delay, backoff.failures)
                else:
                    log.exception("runner %s: unexpected error; trying again in %.0fs", self.owner, delay)
                self.shutdown.wait(delay)
                continue
            if failures := backoff.reset():
                log.info("runner %s: the database answers again, after %d failed tries", self.owner, failures)
            if not busy:
                self.shutdown.wait(self.settings.poll_seconds)
        try:
            with self.db.session() as session:
                forget_runner(session=session, runner=self.owner)
        except Exception as exc:  # it will simply not be seen again
            log.warning("runner %s: could not remove itself from the runners table: %s", self.owner, exc)
        log.info("runner %s: stopped", self.owner)

    def run_once(self) -> bool:
        """Take back expired jobs, then claim and run one job. Returns whether there was one."""
        if time.monotonic() - self._seen_at >= self.settings.heartbeat_seconds:  # one write per heartbeat
            with self.db.session() as session:
                see_runner(session=session, runner=self.owner)
            self._seen_at = time.monotonic()
        self.reclaim()
        with self.db.session() as session:
            row = claim_job(session=session, owner=self.owner, lease_seconds=self.settings.lease_seconds)
        if row is None:
            return False
        self.execute(row)
        return True

    def reclaim(self) -> None:
        with self.db.session() as session:
            expired = requeue_expired(session=session, max_attempts=self.settings.max_attempts,
                                      before=self._fail_interrupted)
        for job in expired:
            log.warning("job %s: the lease of runner %s expired; now %s", job.id, job.lost_owner, job.status)

    def _fail_interrupted(self, job: Expired) -> None:
        """Mark the lost runner's RUNNING trials failed with ``interrupted: true``, before the job is requeued.

        Only that runner's trials (each carries its runner in the ``runner`` user attribute): a trial that
        another runner started is never touched, even if that runner already holds the job again.
        """
        storage = open_storage(self.db.url)
        for _, name in stage_studies(prefix=job.study_prefix, spec=job.spec):
            try:
                study = optuna.load_study(study_name=name, storage=storage,
                                          sampler=optuna.samplers.RandomSampler())
            except KeyError:  # the stage had not started
                continue
            if n := fail_interrupted(study, storage, runner=job.lost_owner):
                log.warning("%s: %d interrupted trial(s) marked failed", name, n)

    def execute(self, row: JobRow) -> None:
        """Run one claimed job to its end, and record the end (unless the lease was lost)."""
        log.info("runner %s: claimed job %s (%s), attempt %d", self.owner, row.id, row.name, row.attempts)
        started = time.monotonic()
        lease = Lease(self.db, job_id=row.id, owner=self.owner, lease_seconds=self.settings.lease_seconds,
                      heartbeat_seconds=self.settings.heartbeat_seconds, shutdown=self.shutdown,
                      stall_seconds=self.settings.stall_seconds)
        status, error, archive = JobStatus.FAILED, None, None
        report: Report | None = None
        away: BaseException | None = None
        deadline = started + self.settings.max_job_seconds

        def should_stop() -> bool:
            return lease.should_stop() or time.monotonic() > deadline

        with lease, tempfile.TemporaryDirectory(prefix="regtune-model-") as model_dir:
            try:
                report = run_job(parse_spec(row.spec), storage=self.db.url, prefix=row.study_prefix,
                                 should_stop=should_stop, limits=job_limits(self.settings), model_dir=Path(model_dir),
                                 trial_attrs={"runner": self.owner})
                archive = pack_model(Path(model_dir))
                status = JobStatus.SUCCEEDED
            except Cancelled as exc:
                status, error = JobStatus.CANCELLED, str(exc)
                if lease.reason is None:  # no cancel, no shutdown, no lost lease: the deadline passed
                    status, error = JobStatus.FAILED, (f"the job ran longer than {self.settings.max_job_seconds:g} s "
                                                       "(REGTUNE_MAX_JOB_SECONDS) and was stopped")
            except Exception as exc:
                if is_database_error(exc):  # not the job's fault: it goes back to the queue
                    away = exc
                elif isinstance(exc, SpecError):
                    error = str(exc)
                elif isinstance(exc, RegtuneError):
                    error = f"{type(exc).__name__}: {exc}"
                else:  # a bug must fail the job, not the runner
                    log.exception("job %s crashed", row.id)
                    error = f"{type(exc).__name__}: {exc}"
        if away is not None and lease.reason not in (LOST, STALLED):
            self._give_back(row, away)
            return
        self._record(row, status, report, error, lease.reason, time.monotonic() - started, archive)

    def _give_back(self, row: JobRow, exc: BaseException) -> None:
        """Return a job that broke on the database to the queue, once the database answers again.

        The attempt does not count: the outage was not the job's fault. Should another runner take
        the job back first (its lease ran out meanwhile), there is nothing left to give back.
        """
        log.warning("job %s: the database failed under it (%s); giving it back to the queue", row.id,
                    _first_line(exc))
        backoff = Backoff(cap=RETRY_CAP_S)
        while True:
            try:
                with self.db.session() as session:
                    mine = release_job(session=session, job_id=row.id, owner=self.owner, reason=f"given back by "
                                       f"runner {self.owner}: the database failed ({_first_line(exc)})")
                log.info("job %s: %s", row.id, "back in the queue" if mine else "another runner took it back")
                return
            except Exception as again:
                if not is_database_error(again) or self.shutdown.is_set():
                    log.warning("job %s: could not give it back (%s); once its lease runs out a runner takes it "
                                "back", row.id, _first_line(again))
                    return
                delay = backoff.next()
                log.warning("job %s: the database is still unavailable (%s); trying again in %.0fs", row.id,
                            _first_line(again), delay)
                self.shutdown.wait(delay)

    def _record(self, row: JobRow, status: JobStatus, report: Report | None, error: str | None,
                reason: str | None, seconds: float, archive: bytes | None = None) -> None:
        with self.db.session() as session:
            if reason in (LOST, STALLED):
                log.warning("job %s: lease %s after %.0fs; another runner owns it now", row.id,
                            "lost" if reason == LOST else "left to expire (the job stalled)", seconds)
                return
            if status == JobStatus.CANCELLED and reason != CANCEL:  # shutting down: back to the queue
                release_job(session=session, job_id=row.id, owner=self.owner, reason=f"released by runner "
                            f"{self.owner} at shutdown; {error}")
                log.info("job %s: given back to the queue after %.0fs (%s)", row.id, seconds, error)
                return
            kept = finish_job(session=session, job_id=row.id, owner=self.owner, status=status,
                              report=json_safe(report.model_dump(mode="json")) if report is not None else None,
                              error=error, model_archive=archive)
        if kept:
            log.info("job %s: %s in %.0fs%s", row.id, status, seconds, f": {error}" if error else "")
        else:
            log.warning("job %s: %s, but its lease was lost; the result is not recorded", row.id, status)
