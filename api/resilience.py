"""Riding out a database that is away for a while (a PostgreSQL restart, SQLite locked past its busy timeout).

A runner that meets a database error does not exit: it logs it, waits (1 s, 2 s, 4 s, ... at most
``cap`` seconds) and tries again. A job whose run broke on the database is given back to the queue
rather than failed: the database's outage is not the job's fault.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

__all__ = ["Backoff", "is_database_error"]


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or any exception it was raised from) says the database could not be reached or used.

    Optuna wraps such errors in ``StorageInternalError``; the thread backend re-raises them as the
    cause of the stage's error: the whole chain is searched.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OperationalError, InterfaceError, optuna.exceptions.StorageInternalError)):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass
class Backoff:
    """Capped exponential waits: ``first``, twice that, ... never more than ``cap`` seconds."""

    first: float = 1.0
    cap: float = 30.0
    failures: int = 0

    def next(self) -> float:
        """The wait before the next try; counts a failure."""
        self.failures += 1
        return float(min(self.cap, self.first * 2 ** (self.failures - 1)))

    def reset(self) -> int:
        """A success: start again from ``first``. Returns how many failures came before it."""
        failures, self.failures = self.failures, 0
        return failures
