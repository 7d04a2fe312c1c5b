"""Shared fixtures: database URLs for SQLite and for a real PostgreSQL server started by the tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

try:  # tests/ may or may not become a package; the helper module sits beside this file either way
    from ._postgres import PostgresServer, find_bindir, running_server
except ImportError:
    from _postgres import PostgresServer, find_bindir, running_server

NO_POSTGRES = "PostgreSQL is not installed (no pg_config --bindir, no /usr/lib/postgresql/*/bin/initdb)"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs the server `postgres`; without PostgreSQL, skip them (outside CI)."""
    missing = find_bindir() is None and not os.environ.get("CI")
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        if missing and item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.skip(reason=NO_POSTGRES))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole session; fails under CI when PostgreSQL is missing."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail(f"{NO_POSTGRES}, and CI needs it: apt-get install postgresql", pytrace=False)
        pytest.skip(NO_POSTGRES)
    with running_server(bindir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database owned by the test role; dropped after the test."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/test.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest) -> str:
    """The same test once per storage backend: a SQLite file, then a PostgreSQL database."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url
