"""Fixtures of the service's tests: the app over a fresh database (SQLite, PostgreSQL), runners."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from api.worker import Runner


@pytest.fixture
def settings(storage_url: str) -> Settings:
    return Settings(database_url=storage_url, api_token=None, lease_seconds=5, heartbeat_seconds=1,
                    poll_seconds=0.2)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


LOCAL = "http://127.0.0.1"  # without a token the service answers loopback addresses and names only


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url=LOCAL) as c:
        yield c


@pytest.fixture
def runner(settings: Settings, app: FastAPI) -> Runner:
    """A runner in this process (``run_once`` runs one job); the app's database, the same settings."""
    return Runner(settings, db=app.state.db)


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes a test starts; any still alive at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
