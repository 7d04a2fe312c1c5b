"""Optuna storage from a database URL: SQLite (WAL, busy timeout) by default, any SQLAlchemy URL works."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import optuna
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tuner.errors import SpecError

__all__ = ["DEFAULT_URL", "engine_kwargs", "open_storage", "prepare_sqlite", "storage_url"]

DEFAULT_URL = "sqlite:///regtune.db"
SQLITE_BUSY_TIMEOUT_S = 60
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # what starts a URL (sqlite:, postgresql+psycopg:)

_lock = threading.Lock()
_cache: dict[str, optuna.storages.RDBStorage] = {}


def prepare_sqlite(url: str) -> None:
    """Switch a SQLite file to WAL mode (a property of the file, kept across connections).

    WAL lets readers (the API, the dashboard) read while a runner writes, so
    nobody sees "database is locked".
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as con:
        con.execute("PRAGMA journal_mode=WAL")
    con.close()


def engine_kwargs(url: str) -> dict[str, object]:
    """Engine options shared by Optuna's storage and regtune's own tables."""
    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}


def storage_url(value: str) -> str:
    """A database URL from what a user typed: a URL as it is, a plain file path as a SQLite file.

    ``runs.db`` is ``sqlite:///runs.db`` (relative to the working directory), ``/data/runs.db`` is
    ``sqlite:////data/runs.db``.
    """
    return value if _SCHEME.match(value) else f"sqlite:///{value}"


def _sqlite_synchronous_normal(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The Optuna storage for ``url``, one per URL and process.

    On SQLite, every connection runs with ``synchronous=NORMAL``: in WAL mode a commit
    then skips its fsync (the WAL is synced at checkpoints), which makes each of a
    trial's many small writes (an epoch's report, an attribute) about 4x cheaper.
    The database cannot be corrupted by a crash; a power cut may lose the last
    commits, which a resumed job re-runs like any interrupted trial.

    Raises:
        SpecError: ``url`` is no database URL (the message shows what one looks like).
    """
    try:
        make_url(url)
    except ArgumentError:
        raise SpecError.one("storage", f"{url!r} is not a database URL; a URL looks like sqlite:///runs.db "
                            "(a SQLite file) or postgresql+psycopg://user:password@host/db", url) from None
    with _lock:
        if url not in _cache:
            prepare_sqlite(url)
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
            if make_url(url).get_backend_name() == "sqlite":
                event.listen(storage.engine, "connect", _sqlite_synchronous_normal)
                storage.engine.dispose()  # connections opened before the listener reconnect with it
            _cache[url] = storage
        return _cache[url]
