"""``GET /jobs/{id}`` as JSON bytes, shared by every client polling a job for up to a second.

A poll of a fresh view touches neither the database nor a thread: the event loop
answers it from memory. A stale or missing view is read again in the thread pool
(the job's row, the trial counts in Optuna's tables, the best trial), at most about
once a second per job however many clients poll it. A cancel through this API
drops the job's view at once, so its caller reads its own write.
"""

from __future__ import annotations

import threading
import time

from api import repository
from api.db import Database
from api.schemas import JobDetail
from api.studies import read_progress

__all__ = ["VIEW_TTL_S", "JobViews"]

VIEW_TTL_S = 1.0


class JobViews:
    """The latest ``JobDetail`` of each job, serialized; thread-safe, about ``size`` jobs kept."""

    def __init__(self, ttl: float = VIEW_TTL_S, size: int = 1024) -> None:
        self.ttl, self.size = ttl, size
        self._views: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def fresh(self, job_id: str) -> bytes | None:
        """The job's view if it is younger than ``ttl``; None otherwise."""
        with self._lock:
            view = self._views.get(job_id)
        return view[1] if view is not None and view[0] > time.monotonic() else None

    def load(self, db: Database, job_id: str) -> bytes:
        """Read the job's detail from the database and keep it. Raises ApiError (404) for an unknown job."""
        with db.session() as session:
            row = repository.get_job(session=session, job_id=job_id)
            stages, best = read_progress(session=session, prefix=row.study_prefix, spec=row.spec)
        body = JobDetail.with_progress(row, stages, best).model_dump_json().encode()
        now = time.monotonic()
        with self._lock:
            if len(self._views) >= self.size:
                self._views = {k: v for k, v in self._views.items() if v[0] > now}
            self._views[job_id] = (now + self.ttl, body)
        return body

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._views.pop(job_id, None)
