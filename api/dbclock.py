"""The database's clock, as a SQL expression: what every lease write and every expiry comparison reads.

Runners on several machines never agree on the time to the second; the database is the one
clock they all share. A runner whose clock runs 30 s fast must not see a healthy runner's
lease as expired, nor stretch its own. ``db_now(seconds)`` is "now + seconds" on the database
server, naive UTC, in the very format each dialect stores ``DateTime`` columns in (on SQLite,
where timestamps are text and compared as text, ``YYYY-MM-DD HH:MM:SS.ffffff``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

__all__ = ["db_now"]


class db_now(FunctionElement[Any]):  # a SQL function, named as one
    """The database server's current UTC time plus ``seconds`` (may be negative)."""

    type = DateTime()
    inherit_cache = False  # the offset is rendered into the statement

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = float(seconds)


@compiles(db_now)
def _default(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(CURRENT_TIMESTAMP + INTERVAL '{element.seconds:.6f} seconds')"


@compiles(db_now, "postgresql")
def _postgresql(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    # statement_timestamp(): the time of this statement, not of its transaction's start
    return f"(timezone('UTC', statement_timestamp()) + make_interval(secs => {element.seconds:.6f}))"


@compiles(db_now, "sqlite")
def _sqlite(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    # %f is seconds with milliseconds ("SS.SSS"); the literal 000 makes it the six digits SQLAlchemy writes
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', '{element.seconds:+.3f} seconds')"
