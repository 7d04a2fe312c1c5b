"""The service's worker side: runners that claim queued jobs, hold a lease on each, and run it.

``runner``: the loop of ``regtune worker`` (or the runner ``regtune serve`` embeds).
``lease``: one job's lease, renewed by a heartbeat thread that also watches for a cancel.
``queue``: the jobs table as the runners use it (claim, renew, finish, give back, reclaim the lost).
"""

from api.worker.lease import CANCEL, LOST, SHUTDOWN, STALLED, Lease
from api.worker.queue import Expired, claim_job, finish_job, read_cancel, release_job, renew_lease, requeue_expired
from api.worker.runner import Runner

__all__ = [
    "CANCEL",
    "LOST",
    "SHUTDOWN",
    "STALLED",
    "Expired",
    "Lease",
    "Runner",
    "claim_job",
    "finish_job",
    "read_cancel",
    "release_job",
    "renew_lease",
    "requeue_expired",
]
