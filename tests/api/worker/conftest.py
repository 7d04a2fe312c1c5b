"""Fixtures of the worker's tests: a migrated database (SQLite, then PostgreSQL) to queue and lease jobs in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.db import Database, migrate


@pytest.fixture
def db(storage_url: str) -> Iterator[Database]:
    database = Database.open(storage_url)
    migrate(database)
    yield database
    database.close()
