"""The service's database: one engine per URL, sessions, and the migrations run at start.

The URL is the one Optuna's storage uses too, opened with the same engine options
(SQLite: WAL and a busy timeout), so the jobs table and the trials share a database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tuner.storage import engine_kwargs, open_storage, ping_idle_connections, prepare_sqlite

__all__ = ["Database", "is_postgres", "migrate"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x72656774756E65  # "regtune": one advisory lock serializes migrations across processes


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@dataclass
class Database:
    """An engine and its session factory for one database URL."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def open(cls, url: str) -> Database:
        prepare_sqlite(url)
        engine = create_engine(url, **engine_kwargs(url))
        ping_idle_connections(engine)
        return cls(url, engine, sessionmaker(engine, expire_on_commit=False))

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    def ping(self) -> None:
        """Raises the driver's error when the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()


@contextlib.contextmanager
def _exclusive(conn: Connection, url: str) -> Iterator[None]:
    """Only one process migrates at a time: an advisory lock (PostgreSQL) or a file lock (SQLite).

    The SQLite lock is a file in the temporary directory named after the database's path, not
    the database file itself: closing a second descriptor of that file would drop SQLite's own
    POSIX locks held by this process.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})  # until commit
        yield
        return
    database = make_url(url).database
    if conn.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    digest = hashlib.sha256(str(Path(database).resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"regtune-migrate-{digest}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(db: Database) -> None:
    """Bring regtune's tables to the newest migration, and create Optuna's, one process at a time.

    Runners started together on a fresh PostgreSQL database would otherwise race to
    create Optuna's tables (and its enum types) on their first job, and all but one fail.
    """
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.connect() as conn, _exclusive(conn, db.url):
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        open_storage(db.url)  # creates Optuna's tables if they are missing
        conn.commit()
    log.debug("regtune tables migrated in %s", db.engine.url.render_as_string(hide_password=True))
