"""A runner's lease on one job: renewed by a heartbeat thread, which also watches for a cancel.

The training loop asks ``should_stop()`` at every epoch boundary and about once a
second inside an epoch; that reads a flag, never the database, so a check costs
nothing. The thread sets the flag when the job is cancelled, when the lease was
lost, or the runner shuts down.

Each ``should_stop()`` is also the job's sign of life: a job that has not asked for
``stall_seconds`` is stuck (a read that never returns, a deadlock), and the lease is
no longer renewed, so that it expires and another runner takes the job back.

The thread never dies silently: any error in a beat (the database away, a bug) is
logged and the beat tried again for as long as a lease lasts; then the job stops as
LOST. Should the thread itself end for any other reason, the job stops too.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from sqlalchemy.exc import SQLAlchemyError

from api.db import Database
from api.runners_table import see_runner
from api.worker.queue import read_cancel, renew_lease

__all__ = ["CANCEL", "LOST", "SHUTDOWN", "STALLED", "Lease"]

log = logging.getLogger(__name__)

CANCEL, LOST, SHUTDOWN, STALLED = "cancel", "lost", "shutdown", "stalled"
_TICK_S = 1.0  # how often the thread looks for a cancel


class Lease:
    """Holds ``owner``'s lease on ``job_id`` while the ``with`` block runs.

    Args:
        shutdown: set when the runner must stop (SIGTERM); the job then stops at its next epoch.
        stall_seconds: how long the job may go without asking ``should_stop()`` before the lease is
            left to expire; None never.
    """

    def __init__(self, db: Database, *, job_id: str, owner: str, lease_seconds: float, heartbeat_seconds: float,
                 shutdown: threading.Event, stall_seconds: float | None = None) -> None:
        self.db, self.job_id, self.owner = db, job_id, owner
        self.lease_seconds, self.heartbeat_seconds = lease_seconds, heartbeat_seconds
        self._shutdown = shutdown
        self._reason: str | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)
        self._expires = time.monotonic() + lease_seconds
        self.stall_seconds = stall_seconds
        self._alive_at = time.monotonic()  # the job's last sign of life: its last should_stop()

    @property
    def reason(self) -> str | None:
        """Why the job should stop: CANCEL, LOST, STALLED or SHUTDOWN; None while it may go on."""
        if self._reason is None and self._shutdown.is_set():
            return SHUTDOWN
        return self._reason

    def should_stop(self) -> bool:
        self._alive_at = time.monotonic()
        return self.reason is not None

    def _stalled(self) -> bool:
        idle = time.monotonic() - self._alive_at
        if self.stall_seconds is None or idle <= self.stall_seconds:
            return False
        log.warning("job %s: no progress for %.0fs (REGTUNE_STALL_SECONDS is %g): the lease is no longer "
                    "renewed, so another runner can take the job back", self.job_id, idle, self.stall_seconds)
        self._stop(STALLED)
        return True

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._closed.set()
        self._thread.join()

    def _stop(self, reason: str) -> None:
        if self._reason is None or (reason in (LOST, STALLED) and self._reason not in (LOST, STALLED)):
            log.info("job %s: stopping at the next epoch boundary (%s)", self.job_id, reason)
            self._reason = reason

    def _beat(self) -> None:
        try:
            self._beat_until_closed()
        except BaseException:  # not even a bug may leave the job running without a lease
            log.exception("job %s: the lease's heartbeat thread failed; stopping the job", self.job_id)
            self._stop(LOST)

    def _beat_until_closed(self) -> None:
        next_renewal = time.monotonic() + self.heartbeat_seconds
        failures, failing_since = 0, 0.0
        while not self._closed.wait(min(_TICK_S, self.heartbeat_seconds)):
            try:
                with self.db.session() as session:
                    if time.monotonic() >= next_renewal:
                        if self._stalled():
                            return
                        if not renew_lease(session=session, job_id=self.job_id, owner=self.owner,
                                           lease_seconds=self.lease_seconds):
                            self._stop(LOST)
                            return
                        see_runner(session=session, runner=self.owner, job_id=self.job_id)
                        self._expires = time.monotonic() + self.lease_seconds
                        next_renewal = time.monotonic() + self.heartbeat_seconds
                    cancel = read_cancel(session=session, job_id=self.job_id, owner=self.owner)
            except Exception as exc:  # the database is away, or a bug: keep trying for as long as a lease lasts
                failures += 1
                failing_since = failing_since or time.monotonic()
                if isinstance(exc, SQLAlchemyError):
                    log.warning("job %s: lease not renewed (%d in a row): %s", self.job_id, failures, exc)
                else:
                    log.exception("job %s: the heartbeat failed (%d in a row)", self.job_id, failures)
                now = time.monotonic()
                if now >= self._expires or now - failing_since >= self.lease_seconds:
                    log.error("job %s: the heartbeat has failed for %.0fs (a lease's length); stopping the job",
                              self.job_id, now - failing_since)
                    self._stop(LOST)
                    return
                continue
            if failures:
                log.info("job %s: the heartbeat works again after %d failure(s)", self.job_id, failures)
                failures, failing_since = 0, 0.0
            if cancel is None:
                self._stop(LOST)
                return
            if cancel:
                self._stop(CANCEL)
