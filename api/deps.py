"""Dependencies of the handlers, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import optuna
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.db import Database
from api.settings import Settings

__all__ = ["DatabaseDep", "SessionDep", "SettingsDep", "StorageDep"]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_session(db: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    with db.session() as session:
        yield session


def get_storage(request: Request) -> optuna.storages.RDBStorage:
    storage: optuna.storages.RDBStorage = request.app.state.storage
    return storage


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[optuna.storages.RDBStorage, Depends(get_storage)]
