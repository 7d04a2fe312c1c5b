"""``tuner.storage``'s writes on PostgreSQL, each in one round trip.

Written one statement at a time in a transaction, a trial's end is six round trips (BEGIN, the end,
an upsert for each of three tables, COMMIT), each a wake-up of the server's process; while a search
trains, that process waits for a core, and the three writes every trial makes (its creation, its
parameters, its end) took 1.4, 1.7 and 3.2 ms on the bench's PostgreSQL: half of its storage time.

- ``write_at_once``: a trial's end with its last rows, or a batch's reports (``write_trials``), and
  ``write_queued_at_once``: what ``together`` queued (parameters, attributes). Every row goes in one
  ``INSERT ... ON CONFLICT`` per table, the inserts (and the end) are data-modifying CTEs of one statement,
  and the rows arrive as arrays (``unnest``), so a statement is the same for any number of rows and is
  compiled once. One statement run outside a transaction is atomic on its own: all of it is written, or
  none. The checks are Optuna's, inside the statement: every trial written must be running (and when one
  ends, its row and the others' are locked by one ``SELECT ... FOR UPDATE``, as in ``finish_trial``'s
  transaction); when one fails, the statement writes nothing and says so (``Written``), and the caller raises.
- ``create_trial_pipelined``: a new trial's two statements and their transaction in one psycopg pipeline
  (and, if asked, a read of the study's trials).
- ``read_trials_at_once``: a read of a study's trials and their rows in one statement.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from optuna.trial import TrialState

__all__ = ["Made", "Read", "TrialRow", "Written", "create_trial_pipelined", "read_trials_at_once", "write_at_once",
           "write_queued_at_once"]


class Written(NamedTuple):
    """What a statement did: ``ok``, it wrote everything (every trial it checked was running, and the one
    that ends ended); else it wrote nothing. ``checked``: the trials whose state it checked."""

    ok: bool
    checked: list[int]


def write_at_once(con: sa.Connection, to_stored: Any, user_attrs: Sequence[tuple[int, str, Any]],
                  intermediate: Sequence[tuple[int, int, float]],
                  ending: tuple[int, TrialState, Sequence[float] | None] | None = None) -> Written:
    """``tuner.storage.write_trials``' rows, and with ``ending`` (trial id, state, values) that trial's end, in one
    statement on ``con`` (a PostgreSQL connection outside a transaction). ``to_stored``: Optuna's
    ``intermediate_value_to_stored_repr``. Of a row given twice, the last is written."""
    from optuna.storages._rdb import models

    to_value = models.TrialValueModel.value_to_stored_repr
    steps = {(t, step): to_stored(value) for t, step, value in intermediate}
    attrs = {(t, key): json.dumps(value) for t, key, value in user_attrs}
    objectives = {(ending[0], i): to_value(v) for i, v in enumerate(ending[2] or [])} if ending else {}
    others = sorted(({t for t, _ in steps} | {t for t, _ in attrs}) - ({ending[0]} if ending else set()))
    # the trial that ends is locked with the others in one SELECT, as the transaction way locks them (one order)
    checked = sorted({*others, ending[0]}) if ending else others
    params: dict[str, Any] = {
        "checked": checked, "n_checked": len(checked), "running": TrialState.RUNNING.name,
        "steps_trial_id": [t for t, _ in steps], "steps_step": [s for _, s in steps],
        "steps_intermediate_value": _floats(v for v, _ in steps.values()),
        "steps_intermediate_value_type": [kind.name for _, kind in steps.values()],
        "attrs_trial_id": [t for t, _ in attrs], "attrs_key": [k for _, k in attrs],
        "attrs_value_json": list(attrs.values()),
        "objectives_trial_id": [t for t, _ in objectives], "objectives_objective": [i for _, i in objectives],
        "objectives_value": _floats(v for v, _ in objectives.values()),
        "objectives_value_type": [kind.name for _, kind in objectives.values()],
    }
    if ending is not None:
        params.update(ending=ending[0], new_state=ending[1].name, completed_at=datetime.now())
    row = _run(con, _statement(ending is not None), params)
    return Written(ok=row.running == len(checked) and (ending is None or row.ended == 1), checked=checked)


def write_queued_at_once(con: sa.Connection, params: list[dict[str, Any]],
                         system: dict[tuple[int, Any], tuple[Any, ...]],
                         study: dict[tuple[int, Any], tuple[Any, ...]]) -> Written:
    """``TrialStorage.together``'s queued writes in one statement on ``con`` (PostgreSQL, outside a transaction):
    ``params``, rows of Optuna's parameter table (each a new row); ``system``, (trial id, key) -> (JSON,) of
    trial system attributes; ``study``, (study id, key) -> (JSON,) of study user attributes. Written only if
    every trial named is running."""
    checked = sorted({p["trial_id"] for p in params} | {t for t, _ in system})
    row = _run(con, _queued_statement(), {
        "checked": checked, "n_checked": len(checked), "running": TrialState.RUNNING.name,
        **{f"params_{c}": [p[c] for p in params] for c in ("trial_id", "param_name", "distribution_json")},
        "params_param_value": _floats(p["param_value"] for p in params),
        "system_trial_id": [t for t, _ in system], "system_key": [k for _, k in system],
        "system_value_json": [v for v, in system.values()],
        "study_study_id": [t for t, _ in study], "study_key": [k for _, k in study],
        "study_value_json": [v for v, in study.values()],
    })
    return Written(ok=row.running == len(checked), checked=checked)


def _run(con: sa.Connection, statement: Any, params: dict[str, Any]) -> Any:
    """``statement``'s one row, with ``params`` (an enum's value by its name), run as the driver's SQL compiled
    once: SQLAlchemy would derive a large statement's cache key at every run (0.2 ms of a 0.7 ms write)."""
    compiled = _compiled(statement, con.dialect)
    return con.exec_driver_sql(compiled.string, compiled.construct_params(params)).one()


@functools.cache
def _compiled(statement: Any, dialect: Any) -> Any:
    return statement.compile(dialect=dialect)


def create_trial_pipelined(con: sa.Connection, study_id: int, start: datetime, *,
                           then_read: tuple[Sequence[int], int] | None = None) -> Made | None:
    """A running trial of the study ``study_id``, made as ``TrialStorage`` makes one (the study's row locked, the
    trial numbered by the count of the study's trials before it, two statements in a transaction), in one round
    trip: psycopg's pipeline sends BEGIN, both statements and COMMIT together, and each statement still runs
    after the one before it has (the count sees every trial made before the lock was taken).

    ``then_read`` (included ids, after): the study's trials are read too, as ``read_trials_at_once(con, study_id,
    None, *then_read)`` reads them, in the same round trip, after the trial is made (before COMMIT: the study's
    row stays locked while they are read, a fraction of a millisecond).

    ``con``: a connection that has not begun a transaction. None when the driver is not psycopg 3 or the
    transaction failed (nothing is written; the caller makes the trial another way, which says why).
    """
    from optuna.storages._rdb import models

    raw: Any = con.connection.dbapi_connection
    if not hasattr(raw, "pipeline") or raw.autocommit:
        return None
    import psycopg

    studies, trials = models.StudyModel.__tablename__, models.TrialModel.__tablename__
    try:
        with raw.pipeline(), raw.cursor() as lock, raw.cursor() as made, raw.cursor() as reader:
            lock.execute(f"SELECT study_id FROM {studies} WHERE study_id = %s FOR UPDATE", (study_id,))
            made.execute(f"INSERT INTO {trials} (number, study_id, state, datetime_start) VALUES ("
                         f"(SELECT count(*) FROM {trials} WHERE study_id = %(study)s), %(study)s, %(state)s, "
                         "%(start)s) RETURNING trial_id, number",
                         {"study": study_id, "state": TrialState.RUNNING.name, "start": start})
            if then_read is not None:
                included, after = then_read
                reader.execute(read_sql(trials_where(False, bool(included), after > -1)),
                               _read_params(study_id, None, included, after))
            raw.commit()
            row = made.fetchone()
            read = None if then_read is None else split(reader.fetchall())
    except psycopg.Error:  # no such study (the insert's foreign key), a lock timeout: nothing was written
        try:
            raw.rollback()
        except psycopg.Error:  # the connection itself failed: the pool drops it, the caller's way gets another
            con.invalidate()
        return None
    return None if row is None else Made(int(row[0]), int(row[1]), read)


class TrialRow(NamedTuple):
    """A row of Optuna's trials table, as ``read_trials_pipelined`` reads it."""

    trial_id: int
    number: int
    state: TrialState
    datetime_start: datetime | None
    datetime_complete: datetime | None


Read = tuple[list[TrialRow], Sequence[Sequence[Any]]]
"""A read of trials: their rows, and their child tables' as (kind, trial id, row id, n, name, num, text, type)."""


class Made(NamedTuple):
    """A trial ``create_trial_pipelined`` made: its id and number, and the read made with it (None if none was)."""

    trial_id: int
    number: int
    read: Read | None


def read_trials_at_once(con: sa.Connection, study_id: int, states: Sequence[TrialState] | None,
                        included: Sequence[int], after: int) -> Read | None:
    """The study's trials in ``states`` (all when None) whose id is in ``included`` or above ``after`` (no such
    condition when ``after`` is -1), and their rows in the five child tables, in one statement (``read_sql``).

    One statement reads one snapshot, so the trials and their rows agree without a transaction: on a
    connection outside one (autocommit) it is one round trip, one message each way. The child rows are
    (kind, trial id, row id, n, name, num, text, type), as ``tuner.storage._children_by_kind`` reads them.
    None when the driver is not psycopg 3, whose parameters (``%(name)s``, a list as an array) the statement
    is written in; the caller reads another way.
    """
    if con.dialect.driver != "psycopg":
        return None
    where = trials_where(states is not None, bool(included), after > -1)
    return split(con.exec_driver_sql(read_sql(where), _read_params(study_id, states, included, after)).all())


def _read_params(study_id: int, states: Sequence[TrialState] | None, included: Sequence[int],
                 after: int) -> dict[str, Any]:
    """``read_sql``'s parameters."""
    return {"study": study_id, "states": [s.name for s in states or ()], "ids": list(included), "after": after}


def split(rows: Sequence[Sequence[Any]], when: Callable[[Any], datetime | None] = lambda t: t) -> Read:
    """``read_sql``'s rows as the trials' and their child tables' (by kind: the trials' come last); ``when``: a
    stored time as a ``datetime`` (psycopg gives one already; SQLite keeps text)."""
    first = next((i for i, r in enumerate(rows) if r[0] == TRIAL_KIND), len(rows))
    return [TrialRow(r[2], r[3], TrialState[r[4]], when(r[8]), when(r[9])) for r in rows[first:]], rows[:first]


TRIAL_KIND = 5
"""``read_sql``'s kind for a row of the trials table (0 to 4 are the child tables')."""


@functools.cache
def trials_where(states: bool, included: bool, after: bool) -> str:
    """The condition on the trials table for ``read_trials_at_once``'s parameters, by which are given."""
    where = ["study_id = %(study)s"]
    if states:
        where.append("state::text = ANY(%(states)s)")
    if included and after:
        where.append("(trial_id = ANY(%(ids)s) OR trial_id > %(after)s)")
    elif after:
        where.append("trial_id > %(after)s")
    elif included:
        where.append("trial_id = ANY(%(ids)s)")
    return " AND ".join(where)


@functools.cache
def read_sql(where: str) -> str:
    """The trials ``where`` selects and their five child tables' rows, in one ``UNION ALL`` by kind, then row id.

    Every row is (kind, trial id, row id, n, name, num, text, type, start, end): a child table's (kinds 0 to 4)
    leaves start and end NULL; a trial's (``TRIAL_KIND``) is (kind, id, id, number, state, NULL, NULL, NULL,
    datetime_start, datetime_complete).
    """
    from optuna.storages._rdb import models

    def part(kind: int, model: Any, row_id: str, n: str, name: str, num: str, text: str, type_: str) -> str:
        return (f"SELECT {kind}, trial_id, {row_id}, {n}, {name}, {num}, {text}, {type_}, NULL::timestamp, "
                f"NULL::timestamp FROM {model.__tablename__} WHERE trial_id IN (SELECT trial_id FROM t)")

    return (f"WITH t AS (SELECT trial_id, number, state, datetime_start, datetime_complete "
            f"FROM {models.TrialModel.__tablename__} WHERE {where}) " + " UNION ALL ".join([
                part(0, models.TrialParamModel, "param_id", "NULL::integer", "param_name::text", "param_value",
                     "distribution_json::text", "NULL::text"),
                part(1, models.TrialValueModel, "trial_value_id", "objective", "NULL", "value", "NULL",
                     "value_type::text"),
                part(2, models.TrialUserAttributeModel, "trial_user_attribute_id", "NULL", "key", "NULL",
                     "value_json", "NULL"),
                part(3, models.TrialSystemAttributeModel, "trial_system_attribute_id", "NULL", "key", "NULL",
                     "value_json", "NULL"),
                part(4, models.TrialIntermediateValueModel, "trial_intermediate_value_id", "step", "NULL",
                     "intermediate_value", "NULL", "intermediate_value_type::text"),
                f"SELECT {TRIAL_KIND}, trial_id, trial_id, number, state::text, NULL, NULL, NULL, datetime_start, "
                "datetime_complete FROM t",
            ]) + " ORDER BY 1, 3")


@functools.cache
def _queued_statement() -> Any:
    """``write_queued_at_once``'s statement, built once: the trials' check (``_live``) and three inserts."""
    from optuna.storages._rdb import models

    n_live, gate = _live(lock=False)
    return sa.select(n_live.label("running")).add_cte(
        _rows_in(models.TrialParamModel, "params", "param_name", ("param_value", "distribution_json"), gate,
                 upsert=False),
        _rows_in(models.TrialSystemAttributeModel, "system", "key", ("value_json",), gate),
        _rows_in(models.StudyUserAttributeModel, "study", "key", ("value_json",), gate, owner="study_id"))


def _live(*, lock: bool) -> tuple[Any, Any]:
    """How many of the trials ``checked`` (a parameter) are running (locked when ``lock``), and whether all are
    (compared with the parameter ``n_checked``)."""
    from optuna.storages._rdb import models
    from sqlalchemy.dialects import postgresql

    trials = models.TrialModel.__table__
    live = sa.select(trials.c.trial_id).where(
        trials.c.trial_id == sa.any_(sa.bindparam("checked", type_=postgresql.ARRAY(sa.Integer))),
        trials.c.state == sa.bindparam("running", type_=trials.c.state.type))
    n_live = sa.select(sa.func.count()).select_from((live.with_for_update() if lock else live).cte("live"))
    return n_live.scalar_subquery(), n_live.scalar_subquery() == sa.bindparam("n_checked", type_=sa.Integer)


@functools.cache
def _statement(ends: bool) -> Any:
    """The statement, built once for writes that end a trial (``ends``) and once for those that do not.

    ``live`` selects the trials written that are running (with the one that ends, all locked when one ends);
    ``ended`` ends the trial if every one of them is running; each table's rows are inserted only if all
    are (``gate``). The statement returns how many trials ended and how many were running.
    """
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    running = sa.bindparam("running", type_=trials.c.state.type)
    n_live, all_live = _live(lock=ends)
    gate: Any = all_live
    n_ended: Any = sa.literal(1)
    if ends:
        ended = (sa.update(trials)
                 .where(trials.c.trial_id == sa.bindparam("ending", type_=sa.Integer), trials.c.state == running,
                        all_live)
                 .values(state=sa.bindparam("new_state", type_=trials.c.state.type),
                         datetime_complete=sa.bindparam("completed_at", type_=trials.c.datetime_complete.type))
                 .returning(trials.c.trial_id).cte("ended"))
        gate = sa.exists(sa.select(ended.c.trial_id))
        n_ended = sa.select(sa.func.count()).select_from(ended).scalar_subquery()

    writes = [_rows_in(models.TrialIntermediateValueModel, "steps", "step",
                       ("intermediate_value", "intermediate_value_type"), gate),
              _rows_in(models.TrialUserAttributeModel, "attrs", "key", ("value_json",), gate),
              _rows_in(models.TrialValueModel, "objectives", "objective", ("value", "value_type"), gate)]
    return sa.select(n_ended.label("ended"), n_live.label("running")).add_cte(*writes)


def _rows_in(model: Any, name: str, key: str, columns: tuple[str, ...], gate: Any, *, owner: str = "trial_id",
             upsert: bool = True) -> Any:
    """A CTE inserting ``model``'s rows, given as the arrays ``{name}_{owner}``, ``{name}_{key}`` and
    ``{name}_{column}``, if ``gate`` holds; ``upsert``: a row already there for (owner, key) is updated."""
    from sqlalchemy.dialects import postgresql

    table = model.__table__
    given = [(c, table.c[c].type) for c in (owner, key, *columns)]
    rows = sa.func.unnest(*(sa.bindparam(f"{name}_{c}", type_=postgresql.ARRAY(_carried(t))) for c, t in given)
                          ).table_valued(*(sa.column(c, _carried(t)) for c, t in given)).render_derived(name=name)
    picked = [sa.cast(rows.c[c], t) if isinstance(t, sa.Enum) else rows.c[c] for c, t in given]
    insert = postgresql.insert(table).from_select([c for c, _ in given], sa.select(*picked).where(gate))
    if upsert:
        insert = insert.on_conflict_do_update(index_elements=[owner, key],
                                              set_={c: insert.excluded[c] for c in columns})
    return insert.cte(f"{name}_in")


def _floats(values: Iterable[Any]) -> list[float | None]:
    """An array's floats as floats (psycopg refuses a list that mixes ints and floats); None stays NULL."""
    return [None if v is None else float(v) for v in values]


def _carried(column_type: Any) -> Any:
    """The type an array carries a column's values in: an enum's names as text (cast back in the statement),
    a string as text, a float as a double, else the column's own type."""
    if isinstance(column_type, sa.Enum | sa.String):
        return sa.Text()
    if isinstance(column_type, sa.Float):
        return sa.Float()
    return column_type
