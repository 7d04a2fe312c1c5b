"""Alembic environment for regtune's own tables.

Optuna keeps its own Alembic history in ``alembic_version``; ours lives in
``regtune_alembic_version`` so both can share one database. ``api.db.migrate``
hands a connection in ``config.attributes["connection"]``; run from the alembic
command line, the database is ``$REGTUNE_DATABASE_URL``.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, create_engine

from api.tables import Base

VERSION_TABLE = "regtune_alembic_version"


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate compares regtune's tables only, never Optuna's."""
    return type_ != "table" or (name or "").startswith("regtune_")


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                      include_name=_ours, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    from api.settings import Settings

    with create_engine(Settings().database_url).connect() as connection:
        _run(connection)
        connection.commit()
