"""``tuner.storage``'s statements on SQLite, as the driver's SQL written here rather than SQLAlchemy Core's.

SQLAlchemy builds a Core statement, derives its cache key, looks its compiled form up and wraps every
row at each execution: most of the time a small write or read takes on SQLite, where the database
itself answers in microseconds. A search makes these calls between batches' epochs, with the CPU's
caches full of the models' weights, and the less code a call runs, the less it pays for that (a trial's
storage calls took 2.2x as long right after a batched product as in a loop of their own). Here the same
statements are strings run with ``exec_driver_sql`` (SQLAlchemy's events and logging still see them), with
the values in the representation SQLAlchemy stores (an enum by its name, a time as the dialect's text).
On ``bench/search_speed.py``'s search (``--calls``) a trial's creation went from 0.98-1.22 to 0.43 ms, the
write of its parameters from 0.74-1.03 to 0.53, its end from 1.08-1.47 to 0.66, a read of the study's
trials from 2.55 to 0.86-1.05: the storage's share of the search from 3.0 to 1.5 % here.

- ``read_trials_at_once``: a read of a study's trials, at every ask of a sampler. Through Core it is six
  queries (the trials, then each of five child tables); here it is one ``UNION ALL``, the statement
  ``tuner._pg_rows`` runs on PostgreSQL in SQLite's dialect (a list is one JSON parameter, read with
  ``json_each``). One statement is one snapshot: the trials and their rows agree.
- Writes, inside a transaction the caller holds, with ``TrialStorage``'s checks around them:
  ``create_trial``, ``trial_states`` (the check that trials run), ``end_trial``, ``insert_rows`` and
  ``upsert_rows``.
"""

from __future__ import annotations

import enum
import functools
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

from tuner import _pg_rows as pg_rows
from tuner._pg_rows import Read

__all__ = ["Live", "create_trial", "end_trial", "insert_rows", "read_trials_at_once", "trial_states", "upsert_rows"]


def read_trials_at_once(con: sa.Connection, study_id: int, states: Sequence[TrialState] | None,
                        included: Sequence[int], after: int) -> Read | None:
    """The study's trials in ``states`` (all when None) whose id is in ``included`` or above ``after`` (no such
    condition when ``after`` is -1), and their rows in the five child tables, as
    ``tuner._pg_rows.read_trials_at_once`` returns them, in one statement on ``con`` (a SQLite connection).

    None when the driver is not ``sqlite3`` or the statement cannot run (a SQLite built without its JSON
    functions): the caller reads another way.
    """
    if not isinstance(con.connection.driver_connection, sqlite3.Connection):
        return None
    params = {"study": study_id, "states": json.dumps([s.name for s in states or ()]),
              "ids": json.dumps(list(included)), "after": after}
    try:
        rows = con.exec_driver_sql(_read_sql(states is not None, bool(included), after > -1), params).all()
    except OperationalError:
        con.rollback()
        return None
    return pg_rows.split(rows, _read_time(con.dialect))


@functools.cache
def _read_time(dialect: Any) -> Any:
    """SQLAlchemy's conversion of a stored ``DateTime`` on ``dialect`` (SQLite keeps it as text), None kept."""
    return sa.DateTime().dialect_impl(dialect).result_processor(dialect, None)


@functools.cache
def _read_sql(states: bool, included: bool, after: bool) -> str:
    """The statement for the conditions given: ``tuner._pg_rows``' own read in SQLite's dialect, which returns
    the same rows (kind, trial id, row id, n, name, num, text, type, start, end), by kind, then row id.

    PostgreSQL's casts are dropped (SQLite keeps each value's own type), ``column = ANY(list)`` becomes
    ``column IN (SELECT value FROM json_each(list))`` (the list given as JSON text) and ``%(name)s`` ``:name``."""
    sql = pg_rows.read_sql(pg_rows.trials_where(states, included, after))
    sql = re.sub(r"(\w+)(?:::\w+)? = ANY\(%\((\w+)\)s\)", r"\1 IN (SELECT value FROM json_each(:\2))", sql)
    return re.sub(r"%\((\w+)\)s", r":\1", re.sub(r"::\w+", "", sql))


class Live(NamedTuple):
    """A trial's id, study and state, as ``trial_states`` reads them."""

    trial_id: int
    study_id: int
    state: TrialState


def trial_states(con: sa.Connection, ids: Iterable[int]) -> dict[int, Live]:
    """The trials ``ids`` that exist, by id: their study and state. A parameter per id, as SQLAlchemy's ``IN``
    sends them (a write names a batch's trials at most): no write needs SQLite's JSON functions."""
    from optuna.storages._rdb import models

    named = sorted(set(ids))
    rows = con.exec_driver_sql(f"SELECT trial_id, study_id, state FROM {models.TrialModel.__tablename__} "
                               f"WHERE trial_id IN ({', '.join('?' * len(named))})", tuple(named))
    return {r[0]: Live(r[0], r[1], TrialState[r[2]]) for r in rows}


def create_trial(con: sa.Connection, study_id: int, start: datetime) -> tuple[int, int] | None:
    """A running trial of the study, numbered by the count of the study's trials before it: (id, number); None
    when there is no such study. As ``TrialStorage._create_running_trial`` makes one, in its transaction."""
    from optuna.storages._rdb import models

    trials = models.TrialModel.__tablename__
    if con.exec_driver_sql(f"SELECT 1 FROM {models.StudyModel.__tablename__} WHERE study_id = ?",
                           (study_id,)).first() is None:
        return None
    row = con.exec_driver_sql(
        f"INSERT INTO {trials} (number, study_id, state, datetime_start) VALUES "
        f"((SELECT count(*) FROM {trials} WHERE study_id = ?), ?, ?, ?) RETURNING trial_id, number",
        (study_id, study_id, TrialState.RUNNING.name, _stored_time(con.dialect)(start))).one()
    return int(row[0]), int(row[1])


def end_trial(con: sa.Connection, trial_id: int, state: TrialState, at: datetime) -> bool:
    """End the trial with ``state`` at ``at`` if it is running; whether it was (and now has ended)."""
    from optuna.storages._rdb import models

    ended = con.exec_driver_sql(
        f"UPDATE {models.TrialModel.__tablename__} SET state = ?, datetime_complete = ? "
        "WHERE trial_id = ? AND state = ?",
        (state.name, _stored_time(con.dialect)(at), trial_id, TrialState.RUNNING.name))
    return ended.rowcount == 1


def insert_rows(con: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts of the same columns) into ``table``."""
    if not rows:
        return
    columns = tuple(rows[0])
    con.exec_driver_sql(_insert_sql(table.name, columns), [tuple(_stored(r[c]) for c in columns) for r in rows])


def upsert_rows(con: sa.Connection, table: sa.Table, owner: str, key: str, columns: tuple[str, ...],
                rows: dict[tuple[int, Any], tuple[Any, ...]]) -> None:
    """Set ``(owner id, key) -> column values`` in ``table`` (unique on owner and key): one
    ``INSERT ... ON CONFLICT DO UPDATE``, run once per row."""
    if not rows:
        return
    con.exec_driver_sql(_upsert_sql(table.name, owner, key, columns),
                        [(o, k, *map(_stored, values)) for (o, k), values in rows.items()])


@functools.cache
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


@functools.cache
def _upsert_sql(table: str, owner: str, key: str, columns: tuple[str, ...]) -> str:
    return (_insert_sql(table, (owner, key, *columns)) + f" ON CONFLICT ({owner}, {key}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in columns))


def _stored(value: Any) -> Any:
    """A value as SQLAlchemy stores it on SQLite: an enum (Optuna's value types) by its name."""
    return value.name if isinstance(value, enum.Enum) else value


@functools.cache
def _stored_time(dialect: Any) -> Any:
    """SQLAlchemy's conversion of a ``datetime`` to what a ``DateTime`` column stores on ``dialect``."""
    return sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
