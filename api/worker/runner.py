"""The runner: a process that claims queued jobs one at a time and runs them with ``tuner.run_job``.

Run as many as you like, on any machine that reaches the database (``regtune
worker``). A runner killed outright loses its lease; the next runner to look
takes the job back, marks the dead runner's unfinished trials failed
(``interrupted``) and resumes it: completed trials count toward each stage's budget.
SIGTERM or SIGINT stops the job at its next epoch boundary and gives it back to the queue.
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
from api.settings import Settings
from api.spec_body import job_limits
from api.tables import JobRow, JobStatus
from api.worker.lease import CANCEL, LOST, STALLED, Lease
from api.worker.queue import Expired, claim_job, finish_job, release_job, requeue_expired
from tuner import Cancelled, RegtuneError, Report, SpecError, open_storage, parse_spec, run_job, study_name
from tuner.search import fail_interrupted

__all__ = ["Runner"]

log = logging.getLogger(__name__)


class Runner:
    """Claims and runs jobs until ``shutdown`` is set."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db or Database.open(settings.database_url)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.shutdown = threading.Event()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the current epoch, give the job back, exit. A second one exits now."""
        def handle(signum: int, frame: FrameType | None) -> None:
            if self.shutdown.is_set():
                raise KeyboardInterrupt
            log.info("runner %s: %s received; stopping (a job in hand stops at its next epoch boundary and "
                     "goes back to the queue)", self.owner, signal.Signals(signum).name)
            self.shutdown.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run_forever(self) -> None:
        migrate(self.db)
        log.info("runner %s: waiting for jobs in %s", self.owner,
                 self.db.engine.url.render_as_string(hide_password=True))
        while not self.shutdown.is_set():
            if not self.run_once():
                self.shutdown.wait(self.settings.poll_seconds)
        log.info("runner %s: stopped", self.owner)

    def run_once(self) -> bool:
        """Take back expired jobs, then claim and run one job. Returns whether there was one."""
        self.reclaim()
        with self.db.session() as session:
            row = claim_job(session=session, owner=self.owner, lease_seconds=self.settings.lease_seconds)
        if row is None:
            return False
        self.execute(row)
        return True

    def reclaim(self) -> None:
        with self.db.session() as session:
            expired = requeue_expired(session=session, max_attempts=self.settings.max_attempts)
        for job in expired:
            log.warning("job %s: the lease of runner %s expired; now %s", job.id, job.lost_owner, job.status)
            self._fail_interrupted(job)

    def _fail_interrupted(self, job: Expired) -> None:
        """Mark the lost runner's RUNNING trials failed with ``interrupted: true``."""
        storage = open_storage(self.db.url)
        for stage in job.spec["search"]["stages"]:
            name = study_name(job.study_prefix, stage["name"])
            try:
                study = optuna.load_study(study_name=name, storage=storage,
                                          sampler=optuna.samplers.RandomSampler())
            except KeyError:  # the stage had not started
                continue
            if n := fail_interrupted(study, storage):
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
        deadline = started + self.settings.max_job_seconds

        def should_stop() -> bool:
            return lease.should_stop() or time.monotonic() > deadline

        with lease, tempfile.TemporaryDirectory(prefix="regtune-model-") as model_dir:
            try:
                report = run_job(parse_spec(row.spec), storage=self.db.url, prefix=row.study_prefix,
                                 should_stop=should_stop, limits=job_limits(self.settings), model_dir=Path(model_dir))
                archive = pack_model(Path(model_dir))
                status = JobStatus.SUCCEEDED
            except Cancelled as exc:
                status, error = JobStatus.CANCELLED, str(exc)
                if lease.reason is None:  # no cancel, no shutdown, no lost lease: the deadline passed
                    status, error = JobStatus.FAILED, (f"the job ran longer than {self.settings.max_job_seconds:g} s "
                                                       "(REGTUNE_MAX_JOB_SECONDS) and was stopped")
            except SpecError as exc:
                error = str(exc)
            except RegtuneError as exc:
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug must fail the job, not the runner
                log.exception("job %s crashed", row.id)
                error = f"{type(exc).__name__}: {exc}"
        self._record(row, status, report, error, lease.reason, time.monotonic() - started, archive)

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
