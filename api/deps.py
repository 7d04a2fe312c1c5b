"""Dependencies of the handlers, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import optuna
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.db import Database
from api.job_view import JobViews
from api.settings import Settings

__all__ = ["DatabaseDep", "JobViewsDep", "SessionDep", "SettingsDep", "StorageDep"]


# The getters of app state are async: FastAPI would run plain functions in its thread pool.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_session(db: Annotated[Database, Depends(get_database)]) -> AsyncIterator[Session]:
    """One session per request, closed in the event loop rather than the thread pool.

    A close that waits for a free thread while its session holds a pooled connection
    can starve the pool: every thread then waits for a connection that never comes back.
    """
    session = db.sessions()
    try:
        yield session
    finally:
        session.close()


async def get_storage(request: Request) -> optuna.storages.RDBStorage:
    storage: optuna.storages.RDBStorage = request.app.state.storage
    return storage


async def get_job_views(request: Request) -> JobViews:
    views: JobViews = request.app.state.job_views
    return views


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[optuna.storages.RDBStorage, Depends(get_storage)]
JobViewsDep = Annotated[JobViews, Depends(get_job_views)]
