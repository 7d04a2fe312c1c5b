"""Optuna storage from a database URL: SQLite (WAL, busy timeout) by default, any SQLAlchemy URL works."""

from __future__ import annotations

import copy
import functools
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import optuna
import sqlalchemy as sa
from optuna import distributions
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError

from tuner import _sqlite_rows as sqlite_rows
from tuner._pg_rows import (
    Read,
    Written,
    create_trial_pipelined,
    read_trials_at_once,
    write_at_once,
    write_queued_at_once,
)
from tuner.errors import SpecError

__all__ = ["DEFAULT_URL", "TrialStorage", "TrialsRead", "engine_kwargs", "finish_trial", "new_trial",
           "new_trial_reading", "open_storage", "ping_idle_connections", "prepare_sqlite", "storage_url", "together",
           "write_trials"]


DEFAULT_URL = "sqlite:///regtune.db"
SQLITE_BUSY_TIMEOUT_S = 60
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # what starts a URL (sqlite:, postgresql+psycopg:)

PING_IDLE_S = 1.0
"""A pooled connection idle this long is pinged before it is used again (``ping_idle_connections``)."""

UPSERTS = ("sqlite", "postgresql")
"""The databases whose rows regtune writes as upserts (``INSERT ... ON CONFLICT``); others: read, then written."""

_lock = threading.Lock()
_cache: dict[str, TrialStorage] = {}


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
    """Engine options shared by Optuna's storage and regtune's own tables (with ``ping_idle_connections``).

    The pool hands out the connection checked in last (``pool_use_lifo``): the one in use stays in use,
    and the others sit idle until needed, when they are pinged.
    """
    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {"pool_size": 5, "max_overflow": 10, "pool_use_lifo": True}


def ping_idle_connections(engine: sa.Engine) -> None:
    """Ping a pooled connection before the pool hands it out, if it sat idle ``PING_IDLE_S`` or longer; one that
    does not answer is replaced by a new one. Nothing on SQLite, whose connections open a file.

    A database restart or a dropped network leaves the pool's connections dead; a connection used less than
    ``PING_IDLE_S`` ago was alive then. SQLAlchemy's ``pool_pre_ping`` pings at every checkout instead: on
    PostgreSQL a round trip, about a tenth of what the storage costs a search (``bench/search_speed.py``).
    """
    if engine.dialect.name == "sqlite":
        return

    @event.listens_for(engine, "checkin")
    def idle_since(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("idle_since", None)  # none: a connection just opened
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool drops this connection and checks out another (a new one)
            raise DisconnectionError(f"a pooled connection idle for {time.monotonic() - since:.0f} s did not "
                                     f"answer: {exc}") from exc


def storage_url(value: str) -> str:
    """A database URL from what a user typed: a URL as it is, a plain file path as a SQLite file.

    ``runs.db`` is ``sqlite:///runs.db`` (relative to the working directory), ``/data/runs.db`` is
    ``sqlite:////data/runs.db``.
    """
    return value if _SCHEME.match(value) else f"sqlite:///{value}"


class TrialStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage``, reading and writing trials without its ORM.

    A sampler reads the study's trials every time it is asked for one (Optuna's cache
    re-reads the running ones), and a batch of trials asks often. Optuna builds each
    read from ORM objects in seven queries: about 3 ms for a handful of running trials
    and 30 ms for forty finished ones on SQLite, most of it object construction. Here
    one statement returns plain rows (six Core queries where it cannot run), and the trials are built exactly as
    Optuna builds them (``tests/tuner/test_storage.py`` compares the two on SQLite and
    PostgreSQL).

    A trial's own writes take fewer round trips than Optuna's (each a commit and a few
    statements; on PostgreSQL every statement is a round trip), with Optuna's checks and
    in its representation: a new trial is made in two statements; inside ``fresh_trials``
    a trial this thread has just created is not read back (``optuna.Trial`` reads the trial
    it is made for, which then holds nothing but its number and start); inside ``together``
    the parameters a sampler sets (and what it notes in the trial's system attributes), or a
    study's attributes, are written in one transaction as the scope ends; ``finish_trial``
    ends a trial with its last rows. Template trials (``enqueue_trial``, ``add_trial``) and
    every other write are Optuna's own. On PostgreSQL and SQLite a read of a study's trials is one
    statement (on PostgreSQL one round trip): the trials and their rows in one ``UNION ALL``
    (``tuner._pg_rows``, ``tuner._sqlite_rows``); so is a read of a study's user or system attributes. On
    SQLite regtune's statements are the driver's SQL, not SQLAlchemy Core's (``tuner._sqlite_rows`` says why).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()

    @contextmanager
    def fresh_trials(self, read_after: tuple[frozenset[int], int] | None = None) -> Iterator[list[TrialsRead]]:
        """Inside, a trial this thread creates without a template is answered from what was written.

        ``read_after`` (included ids, after): on PostgreSQL the study's trials that ``_get_trials(study, None,
        *read_after)`` returns are read with the trial's creation, in its round trip, and put in the yielded
        list as a ``TrialsRead`` (``together(read)`` answers that read from it); elsewhere nothing is read.
        """
        ahead: list[TrialsRead] = []
        self._local.fresh, self._local.read_after, self._local.ahead = {}, read_after, ahead
        try:
            yield ahead
        finally:
            self._local.fresh = self._local.read_after = self._local.ahead = None

    @contextmanager
    def together(self, read: TrialsRead | None = None) -> Iterator[None]:
        """Inside, this thread's writes of trial parameters, trial system attributes and study user attributes
        are queued and made in one transaction as the scope ends (also when it ends with an error: what was
        set is kept, as it would have been one by one). Nested scopes write with the outermost.

        Reads of a study's trials are answered once inside: a read asked again with the same arguments
        (a sampler's search-space inference, then its sampling, in one ask), or for trials an earlier read
        holds (Optuna's cache after that read), gets the trials that read returned, as if the other writers
        had written a moment later; this thread writes nothing it could miss until the scope ends.

        ``read``: a read made before (with a new trial, ``fresh_trials``) that answers inside as if it had
        been made as the scope began."""
        if getattr(self._local, "queued", None) is not None:
            if read is not None:
                self._local.reads.setdefault(read.key, read.trials)
            yield
            return
        queued: list[tuple[Any, ...]] = []
        self._local.queued = queued
        self._local.reads = {} if read is None else {read.key: read.trials}
        try:
            yield
        finally:
            self._local.queued = self._local.reads = None
            if queued:
                self._write_queued(queued)

    def _queue(self, *write: Any) -> bool:
        """Queue ``write`` (its kind, then its arguments) when inside ``together``; False when not."""
        queued = getattr(self._local, "queued", None)
        if queued is None:
            return False
        queued.append(write)
        return True

    def _write_queued(self, queued: list[tuple[Any, ...]]) -> None:
        """What ``together`` queued, in one transaction, with Optuna's checks and in its representation.

        As Optuna's one-by-one writes: every trial written must be running, and a parameter's
        distribution compatible with the one the study's trials have for its name. Unlike them, the
        trials are read in one query and the rows written a table at a time (``_set_rows``); of a key
        written twice the last value stays.
        """
        if _one_statement(self) and all(w[0] != "param" or w[5] is not None for w in queued):
            new, system, study = _queued_rows(queued, _no_lookup)  # no distribution to look up: one statement
            with _as_optuna_raises(), _autocommit(self) as con:
                _raise_unless_written(con, write_queued_at_once(con, new, system, study))
            return
        with _writing(self, no_autoflush=True) as session:  # refused: raises, and nothing is written
            _write_queued_rows(session, queued)

    def finish_trial(self, trial_id: int, state: TrialState, values: Sequence[float] | None, *,
                     user_attrs: Sequence[tuple[int, str, Any]] = (),
                     intermediate: Sequence[tuple[int, int, float]] = ()) -> None:
        """``set_trial_state_values`` for a running trial that ends, with ``write_trials``' rows in the same
        transaction: a trial's last reports and attributes and its end are one commit, not two.

        Raises:
            KeyError: no trial has one of the ids.
            optuna.exceptions.UpdateFinishedTrialError: the trial (or one written) has finished; nothing is
                written then.
        """
        from optuna.storages._rdb import models

        assert state.is_finished()
        to_stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
        if _one_statement(self):
            _write_at_once(self, to_stored, user_attrs, intermediate, ending=(trial_id, state, values))
            return
        with _writing(self) as session:
            _write_rows(session, to_stored, user_attrs, intermediate, ending=(trial_id, state, values))

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if template_trial is not None:
            return super()._create_new_trial(study_id, template_trial)
        try:
            frozen = self._create_running_trial(study_id)
        except OperationalError:  # a lock timeout, a deadlock: Optuna's own, which retries
            frozen = super()._create_new_trial(study_id)
        fresh = getattr(self._local, "fresh", None)
        if fresh is not None:
            fresh[frozen._trial_id] = copy.deepcopy(frozen)
        return frozen

    def _create_running_trial(self, study_id: int) -> FrozenTrial:
        """Optuna's ``_create_new_trial`` without a template, in two statements instead of four: the study's
        row is locked, as Optuna locks it (its trials are numbered in the order they are made), and the trial
        is inserted with its number, the count of the study's trials before it. On PostgreSQL with psycopg 3
        both go in one round trip (``create_trial_pipelined``)."""
        from optuna.storages._rdb import models

        trials = models.TrialModel.__table__
        start = datetime.now()
        if self.engine.dialect.name == "postgresql":  # in one round trip where the driver can
            read_after = getattr(self._local, "read_after", None)
            then_read = None if read_after is None else (_narrowed(*read_after), read_after[1])
            with self.engine.connect() as con:
                made = create_trial_pipelined(con, study_id, start, then_read=then_read)
            if made is not None:
                if read_after is not None and made.read is not None:
                    self._local.ahead.append(TrialsRead(_read_key(study_id, None, *read_after), _trials_of(made.read)))
                return _running_trial(made.trial_id, made.number, start)
        with self.engine.begin() as con:
            if con.dialect.name == "sqlite":
                numbered = sqlite_rows.create_trial(con, study_id, start)
                if numbered is None:
                    raise KeyError(models.NOT_FOUND_MSG)
                return _running_trial(*numbered, start)
            _require_study(con, study_id, lock=True)
            before = sa.select(sa.func.count()).select_from(trials).where(trials.c.study_id == study_id)
            row = con.execute(sa.insert(trials).values(
                study_id=study_id, number=before.scalar_subquery(), state=TrialState.RUNNING, datetime_start=start,
            ).returning(trials.c.trial_id, trials.c.number)).one()
        return _running_trial(row.trial_id, row.number, start)

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: BaseDistribution, previous_distribution: BaseDistribution | None) -> None:
        if not self._queue("param", trial_id, param_name, param_value_internal, distribution, previous_distribution):
            super()._set_trial_param(trial_id, param_name, param_value_internal, distribution, previous_distribution)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._queue("system", trial_id, key, value):
            super().set_trial_system_attr(trial_id, key, value)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        if not self._queue("study", study_id, key, value):
            super().set_study_user_attr(study_id, key, value)

    def _reading(self) -> sa.Connection:
        """A connection to read with. On PostgreSQL without a transaction: under its READ COMMITTED each
        statement reads its own snapshot either way, and BEGIN and ROLLBACK cost two round trips of a read's
        five (1.9 -> 1.4 ms)."""
        con = self.engine.connect()
        return con.execution_options(isolation_level="AUTOCOMMIT") if con.dialect.name == "postgresql" else con

    def _get_trials(self, study_id: int, states: Container[TrialState] | None, included_trial_ids: set[int],
                    trial_id_greater_than: int) -> list[FrozenTrial]:
        """The trials ``RDBStorage._get_trials`` returns: those of the study in ``states``, and of those only
        the ones in ``included_trial_ids`` or after ``trial_id_greater_than`` (when it is above -1); inside
        ``together``, a read asked before with the same arguments, or one whose trials an earlier read holds
        (``_within``), is answered from that read."""
        reads: dict[Any, list[FrozenTrial]] | None = getattr(self._local, "reads", None)
        key = _read_key(study_id, states, included_trial_ids, trial_id_greater_than)
        answered = None if reads is None else reads[key] if key in reads else _within(reads, key)
        if answered is not None:
            return list(answered)
        found = self._read_study_trials(study_id, states, included_trial_ids, trial_id_greater_than)
        if reads is not None:
            reads[key] = found
        return list(found)

    def _read_study_trials(self, study_id: int, states: Container[TrialState] | None, included_trial_ids: set[int],
                           trial_id_greater_than: int) -> list[FrozenTrial]:
        from optuna.storages._rdb import models

        trials = models.TrialModel.__table__
        included = _narrowed(included_trial_ids, trial_id_greater_than)
        at_once = {"postgresql": read_trials_at_once, "sqlite": sqlite_rows.read_trials_at_once}.get(
            self.engine.dialect.name)
        if at_once is not None:  # one statement where the driver can
            kept = None if states is None else list(states)  # type: ignore[call-overload]
            with self._reading() as con:
                read = at_once(con, study_id, kept, included, trial_id_greater_than)
                if read is not None:
                    found = _trials_of(read)
                    if not found:
                        _require_study(con, study_id)
                    return found
        base = [trials.c.study_id == study_id]
        if states is not None:
            base.append(trials.c.state.in_(list(states)))  # type: ignore[call-overload]
        if included and trial_id_greater_than > -1:
            narrow = [sa.or_(trials.c.trial_id.in_(included), trials.c.trial_id > trial_id_greater_than)]
        elif trial_id_greater_than > -1:
            narrow = [trials.c.trial_id > trial_id_greater_than]
        else:
            narrow = []
        with self._reading() as con:
            try:
                found = _read_trials(con, [*base, *narrow])
            except OperationalError:  # too many ids for one IN (SQLite's variable limit): as Optuna falls back
                con.rollback()
                named = set(included)
                found = [t for t in _read_trials(con, base)
                         if t._trial_id in named or t._trial_id > trial_id_greater_than]
            if not found:  # no trials: is there a study at all?
                _require_study(con, study_id)
            return found

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        """``RDBStorage.get_study_user_attrs`` in one statement (Optuna's is four round trips on PostgreSQL:
        BEGIN, the study, its attributes, COMMIT); KeyError when there is no such study."""
        from optuna.storages._rdb import models

        return self._study_attrs(study_id, models.StudyUserAttributeModel)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        """``RDBStorage.get_study_system_attrs`` in one statement; KeyError when there is no such study."""
        from optuna.storages._rdb import models

        return self._study_attrs(study_id, models.StudySystemAttributeModel)

    def _study_attrs(self, study_id: int, model: Any) -> dict[str, Any]:
        """The study's rows of ``model``'s table (its user or system attributes) as Optuna reads them: the study
        joined with them, so that a study without attributes still has a row and a missing study has none."""
        from optuna.storages._rdb import models

        studies, attrs = models.StudyModel.__table__, model.__table__
        query = (sa.select(studies.c.study_id, attrs.c.key, attrs.c.value_json)
                 .select_from(studies.outerjoin(attrs, attrs.c.study_id == studies.c.study_id))
                 .where(studies.c.study_id == study_id).order_by(*attrs.primary_key.columns))
        with _as_optuna_raises(), self._reading() as con:
            rows = con.execute(query).all()
        if not rows:
            raise KeyError(models.NOT_FOUND_MSG)
        return {row.key: json.loads(row.value_json) for row in rows if row.key is not None}

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """``RDBStorage.get_trial``: the trial with ``trial_id``; KeyError when there is none."""
        from optuna.storages._rdb import models

        fresh = getattr(self._local, "fresh", None)
        if fresh and (created := fresh.pop(trial_id, None)) is not None:
            return created
        with self._reading() as con:
            found = _read_trials(con, [models.TrialModel.__table__.c.trial_id == trial_id])
        if not found:
            raise KeyError(models.NOT_FOUND_MSG)
        return found[0]


class TrialsRead(NamedTuple):
    """A read of a study's trials made ahead (``TrialStorage.fresh_trials``): ``_get_trials``' key for it
    (``_read_key``), and the trials."""

    key: tuple[Any, ...]
    trials: list[FrozenTrial]


def _read_key(study_id: int, states: Container[TrialState] | None, included_trial_ids: Container[int],
              trial_id_greater_than: int) -> tuple[Any, ...]:
    """``TrialStorage._get_trials``' arguments as a key of what it read."""
    kept: Any = states  # Containers: in practice tuples, lists and sets
    ids: Any = included_trial_ids
    return study_id, None if kept is None else tuple(kept), frozenset(ids), trial_id_greater_than


def _within(reads: dict[Any, list[FrozenTrial]], key: tuple[Any, ...]) -> list[FrozenTrial] | None:
    """The trials a read of all states with ``key``'s arguments returns, taken from one of ``reads`` that holds
    them all (Optuna's cache reads again after a read that moved its state, with ids the first read returned),
    or None when none does."""
    study_id, states, included, after = key
    if states is not None:
        return None
    for (study, kept, named, above), trials in reads.items():
        if study == study_id and kept is None and above <= after and all(i in named or i > above for i in included):
            return [t for t in trials if t._trial_id in included or t._trial_id > after]
    return None


def _narrowed(included_trial_ids: Container[int], trial_id_greater_than: int) -> list[int]:
    """Of ``included_trial_ids``, those a read must name (the others are above ``trial_id_greater_than``), sorted."""
    ids: Any = included_trial_ids
    return sorted(i for i in ids if i <= trial_id_greater_than)


def _running_trial(trial_id: int, number: int, start: datetime) -> FrozenTrial:
    """A trial just made: running since ``start``, holding nothing yet."""
    return FrozenTrial(number=number, state=TrialState.RUNNING, value=None, values=None, datetime_start=start,
                       datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                       intermediate_values={}, trial_id=trial_id)


def _write_queued_rows(session: Any, queued: list[tuple[Any, ...]]) -> None:
    """``TrialStorage._write_queued``'s checks and statements, on a connection or an ORM session."""
    from optuna.storages._rdb import models

    found = _running_trials(session, [w[1] for w in queued if w[0] != "study"])
    new, system, study = _queued_rows(
        queued, lambda trial_id, name: _param_distribution(session, found[trial_id].study_id, name))
    if new and _on_sqlite(session):
        sqlite_rows.insert_rows(session, models.TrialParamModel.__table__, new)
    elif new:
        session.execute(sa.insert(models.TrialParamModel.__table__), new)
    _set_rows(session, models.TrialSystemAttributeModel, "key", ("value_json",), system)
    _set_rows(session, models.StudyUserAttributeModel, "key", ("value_json",), study, owner="study_id")


def _queued_rows(queued: list[tuple[Any, ...]], stored: Callable[[int, str], BaseDistribution | None]
                 ) -> tuple[list[dict[str, Any]], dict[tuple[int, Any], tuple[Any, ...]],
                            dict[tuple[int, Any], tuple[Any, ...]]]:
    """``together``'s queue as rows: the parameters' (each checked against the distribution its study has
    for its name, which ``stored(trial id, name)`` looks up when the queue does not carry it), and the
    trials' system and the studies' user attributes by (owner id, key), the last value of a key kept.

    Raises:
        ValueError: a parameter's distribution is not compatible with the study's.
    """
    new: list[dict[str, Any]] = []
    system: dict[tuple[int, Any], tuple[Any, ...]] = {}
    study: dict[tuple[int, Any], tuple[Any, ...]] = {}
    for kind, owner, *rest in queued:
        if kind == "param":
            name, value, distribution, previous = rest
            if previous is None:  # the study's first trial to set it since this process started
                previous = stored(owner, name)
            if previous is not None:
                distributions.check_distribution_compatibility(previous, distribution)
            new.append({"trial_id": owner, "param_name": name, "param_value": value,
                        "distribution_json": distributions.distribution_to_json(distribution)})
        else:
            (system if kind == "system" else study)[owner, rest[0]] = (json.dumps(rest[1]),)
    return new, system, study


def _no_lookup(trial_id: int, name: str) -> BaseDistribution | None:
    raise AssertionError("every queued parameter carries the distribution it is checked against")


def _require_study(con: sa.Connection, study_id: int, *, lock: bool = False) -> None:
    """Raise KeyError (Optuna's message) when there is no study ``study_id``; ``lock``: lock its row, as Optuna
    does to number a new trial."""
    from optuna.storages._rdb import models

    studies = models.StudyModel.__table__
    query = sa.select(studies.c.study_id).where(studies.c.study_id == study_id)
    if con.execute(query.with_for_update() if lock else query).first() is None:
        raise KeyError(models.NOT_FOUND_MSG)


def _param_distribution(session: Any, study_id: int, name: str) -> BaseDistribution | None:
    """The distribution a trial of the study has stored for parameter ``name`` (Optuna's own lookup)."""
    from optuna.storages._rdb import models

    params, trials = models.TrialParamModel.__table__, models.TrialModel.__table__
    row = session.execute(sa.select(params.c.distribution_json)
                          .join(trials, params.c.trial_id == trials.c.trial_id)
                          .where(trials.c.study_id == study_id, params.c.param_name == name).limit(1)).first()
    return None if row is None else json_to_distribution(row.distribution_json)


def _children(con: sa.Connection, ids: Any, model: Any, order: str) -> dict[int, list[Any]]:
    """The rows of ``model``'s table for the trials ``ids``, by trial, in ``order``."""
    table = model.__table__
    by: dict[int, list[Any]] = {}
    for row in con.execute(sa.select(table).where(table.c.trial_id.in_(ids)).order_by(table.c[order])):
        by.setdefault(row.trial_id, []).append(row)
    return by


def _children_at_once(con: sa.Connection, ids: list[int]) -> list[dict[int, list[Any]]]:
    """``_children`` of the five tables (params, values, user and system attributes, intermediate values) for the
    trials ``ids`` in one ``UNION ALL`` (``_children_union``), each row with the column names its own table has."""
    return _children_by_kind(con.execute(_children_union(), {"ids": ids}).all())


def _children_by_kind(rows: Sequence[Sequence[Any]]) -> list[dict[int, list[Any]]]:
    """The union's rows, (kind, trial id, row id, n, name, num, text, type), as ``_children`` gives each table's."""
    from optuna.storages._rdb import models

    value_type = models.TrialValueModel.TrialValueType
    step_type = models.TrialIntermediateValueModel.TrialIntermediateValueType
    build = [
        lambda r: SimpleNamespace(param_name=r[4], param_value=r[5], distribution_json=r[6]),
        lambda r: SimpleNamespace(objective=r[3], value=r[5], value_type=value_type[r[7]]),
        lambda r: SimpleNamespace(key=r[4], value_json=r[6]),
        lambda r: SimpleNamespace(key=r[4], value_json=r[6]),
        lambda r: SimpleNamespace(step=r[3], intermediate_value=r[5], intermediate_value_type=step_type[r[7]]),
    ]
    out: list[dict[int, list[Any]]] = [{} for _ in build]
    for row in rows:
        out[row[0]].setdefault(row[1], []).append(build[row[0]](row))
    return out


@functools.cache
def _children_union() -> Any:
    """The statement ``_children_at_once`` runs on PostgreSQL, built once: the trials' ids are its parameter
    ``ids``, an array (``= ANY``; an ``IN`` list would take a parameter per id and part, up to PostgreSQL's 65535)."""
    from optuna.storages._rdb import models
    from sqlalchemy.dialects import postgresql

    p, v, u, s, i = (m.__table__ for m in (models.TrialParamModel, models.TrialValueModel,
                                          models.TrialUserAttributeModel, models.TrialSystemAttributeModel,
                                          models.TrialIntermediateValueModel))
    no_int, no_num, no_text = sa.cast(sa.null(), sa.Integer), sa.cast(sa.null(), sa.Float), sa.cast(sa.null(), sa.Text)
    ids: Any = sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Integer)))  # one parameter however many

    def part(kind: int, table: Any, row_id: Any, n: Any, name: Any, num: Any, text: Any, type_: Any) -> Any:
        return sa.select(sa.literal_column(str(kind)).label("kind"), table.c.trial_id, row_id.label("row_id"),
                         n.label("n"), name.label("name"), num.label("num"), text.label("text"),
                         type_.label("type")).where(table.c.trial_id == ids)

    return sa.union_all(
        part(0, p, p.c.param_id, no_int, p.c.param_name, p.c.param_value, p.c.distribution_json, no_text),
        part(1, v, v.c.trial_value_id, v.c.objective, no_text, v.c.value, no_text, sa.cast(v.c.value_type, sa.Text)),
        part(2, u, u.c.trial_user_attribute_id, no_int, u.c.key, no_num, u.c.value_json, no_text),
        part(3, s, s.c.trial_system_attribute_id, no_int, s.c.key, no_num, s.c.value_json, no_text),
        part(4, i, i.c.trial_intermediate_value_id, i.c.step, no_text, i.c.intermediate_value, no_text,
             sa.cast(i.c.intermediate_value_type, sa.Text)),
    ).order_by("kind", "row_id")


def _read_trials(con: sa.Connection, where: list[Any]) -> list[FrozenTrial]:
    """The trials matching ``where`` (on the trials table), ordered by id, built as Optuna builds them."""
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    rows = con.execute(sa.select(trials).where(*where).order_by(trials.c.trial_id)).all()
    if not rows:
        return []  # and no child queries
    if con.dialect.name == "postgresql":  # each query is a round trip: one for all five, of the trials just read
        children = _children_at_once(con, [row.trial_id for row in rows])
    else:  # SQLite has no round trips, and would turn the floats into text with 15 digits
        ids = sa.select(trials.c.trial_id).where(*where).scalar_subquery()
        children = [_children(con, ids, models.TrialParamModel, "param_id"),
                    _children(con, ids, models.TrialValueModel, "trial_value_id"),
                    _children(con, ids, models.TrialUserAttributeModel, "trial_user_attribute_id"),
                    _children(con, ids, models.TrialSystemAttributeModel, "trial_system_attribute_id"),
                    _children(con, ids, models.TrialIntermediateValueModel, "trial_intermediate_value_id")]
    return _built(rows, children)


def _built(rows: Sequence[Any], children: list[dict[int, list[Any]]]) -> list[FrozenTrial]:
    """Trials from their rows (with ``trial_id``, ``number``, ``state``, ``datetime_start``, ``datetime_complete``)
    and their five tables' rows by trial (``_children``), built as Optuna builds them."""
    from optuna.storages._rdb import models

    params, values, user, system, steps = children
    to_value = models.TrialValueModel.stored_repr_to_value
    to_step = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    dists: dict[str, BaseDistribution] = {}

    def dist(text: str) -> BaseDistribution:
        if text not in dists:
            dists[text] = json_to_distribution(text)
        return dists[text]

    out = []
    for row in rows:
        tid = row.trial_id
        objective = values.get(tid)
        vals: list[float] | None = None
        if objective:
            vals = [0.0] * len(objective)
            for v in objective:
                vals[v.objective] = to_value(v.value, v.value_type)
        ps = params.get(tid, [])
        out.append(FrozenTrial(
            number=row.number, state=row.state, value=None, values=vals,
            datetime_start=row.datetime_start, datetime_complete=row.datetime_complete,
            params={p.param_name: dist(p.distribution_json).to_external_repr(p.param_value) for p in ps},
            distributions={p.param_name: dist(p.distribution_json) for p in ps},
            user_attrs={a.key: json.loads(a.value_json) for a in user.get(tid, [])},
            system_attrs={a.key: json.loads(a.value_json) for a in system.get(tid, [])},
            intermediate_values={v.step: to_step(v.intermediate_value, v.intermediate_value_type)
                                 for v in steps.get(tid, [])},
            trial_id=tid,
        ))
    return out


def _trials_of(read: Read) -> list[FrozenTrial]:
    """The trials of a one-statement read on PostgreSQL (``tuner._pg_rows``), built as Optuna builds them."""
    return _built(read[0], _children_by_kind(read[1]))


def _sqlite_synchronous_normal(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def open_storage(url: str, *, ready: bool = False) -> TrialStorage:
    """The Optuna storage for ``url``, one per URL and process (a ``TrialStorage``).

    ``ready``: another process (the driver of a Ray worker) has made the tables and checked their
    version, so neither is done again (Optuna's check imports alembic: 0.3 s in a fresh process).

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
            storage = TrialStorage(url, engine_kwargs=engine_kwargs(url), skip_compatibility_check=ready,
                                   skip_table_creation=ready)
            if make_url(url).get_backend_name() == "sqlite":
                event.listen(storage.engine, "connect", _sqlite_synchronous_normal)
            ping_idle_connections(storage.engine)
            storage.engine.dispose()  # connections opened before the listeners reconnect with them
            _cache[url] = storage
        return _cache[url]


def _backend(storage: optuna.storages.BaseStorage) -> Any:
    """The storage behind Optuna's cache (which wraps an ``RDBStorage``), or ``storage`` itself."""
    return getattr(storage, "_backend", storage)


def new_trial(study: optuna.Study) -> optuna.Trial:
    """A new running trial of ``study``, as ``study.ask()`` makes one but without its reads.

    ``ask`` looks for an enqueued trial first (a read of the study) and then reads back the
    trial it created; on a ``TrialStorage`` neither is done. Only for a study with nothing
    enqueued; the sampler is asked as the trial's parameters are suggested, as always.
    """
    backend = _backend(study._storage)
    if not isinstance(backend, TrialStorage):
        return optuna.Trial(study, study._storage.create_new_trial(study._study_id))
    with backend.fresh_trials():
        return optuna.Trial(study, study._storage.create_new_trial(study._study_id))


def new_trial_reading(study: optuna.Study, *, read: bool = True) -> tuple[optuna.Trial, TrialsRead | None]:
    """``new_trial``, and the read of the study's trials its sampler will make next through Optuna's cache
    (TPE with ``constant_liar`` reads the running trials at every ask), made with the trial's creation: on
    PostgreSQL in its round trip, one of three an ask takes. ``together(storage, read)`` answers that read
    from it. None where the storage is not a ``TrialStorage`` on PostgreSQL behind Optuna's cache.

    The read is the one the cache would ask for now (its running trials, and all after its last finished
    one), a snapshot from the moment the trial is made (what this thread writes after, such as the trial's
    tags, shows at the next read); if the cache's state moves before the sampler reads (another thread
    read), the arguments differ, and unless the read holds every trial they name (``_within``) the sampler
    reads the database as before.

    ``read=False``: the trial alone, for a sampler that reads no trials (Optuna's ``RandomSampler``), where the
    read would be work for nothing inside the creation's round trip (0.3-0.5 ms on PostgreSQL).
    """
    cache, backend = study._storage, _backend(study._storage)
    if not (read and isinstance(backend, TrialStorage) and isinstance(cache, _CachedStorage)
            and backend.engine.dialect.name == "postgresql"):
        return new_trial(study), None
    with cache._lock:
        known = cache._studies.get(study._study_id)
        read_after = (frozenset(known.unfinished_trial_ids), known.last_finished_trial_id) if known else (
            frozenset(), -1)
    with backend.fresh_trials(read_after) as ahead:
        trial = optuna.Trial(study, cache.create_new_trial(study._study_id))
    return trial, ahead[0] if ahead else None


@contextmanager
def together(storage: optuna.storages.BaseStorage, read: TrialsRead | None = None) -> Iterator[None]:
    """``TrialStorage.together`` where ``storage`` is one (also behind Optuna's cache); else nothing."""
    backend = _backend(storage)
    if not isinstance(backend, TrialStorage):
        yield
        return
    with backend.together(read):
        yield


def finish_trial(storage: optuna.storages.BaseStorage, trial_id: int, state: TrialState,
                 values: Sequence[float] | None, *, user_attrs: Sequence[tuple[int, str, Any]] = (),
                 intermediate: Sequence[tuple[int, int, float]] = ()) -> None:
    """End a running trial (``set_trial_state_values``) and write ``write_trials``' rows: in one transaction
    on a ``TrialStorage`` (also behind Optuna's cache), the rows first and then the end on any other."""
    backend = _backend(storage)
    if isinstance(backend, TrialStorage):
        backend.finish_trial(trial_id, state, values, user_attrs=user_attrs, intermediate=intermediate)
        return
    write_trials(storage, user_attrs=user_attrs, intermediate=intermediate)
    storage.set_trial_state_values(trial_id, state, values)


def write_trials(storage: optuna.storages.BaseStorage, *, user_attrs: Sequence[tuple[int, str, Any]] = (),
                 intermediate: Sequence[tuple[int, int, float]] = ()) -> None:
    """Write several trials' user attributes and intermediate values in one transaction.

    A trial's attributes at its end, or a whole batch's epoch reports, become one
    commit and a handful of statements instead of a commit and three statements
    each (on SQLite a commit costs about a millisecond, as much as a small model's
    epoch). Optuna has no public call for this: on an ``RDBStorage`` (also behind
    the cache Optuna wraps it in) the rows are written through Optuna's own table
    models, in the representation its ``set_trial_user_attr`` and
    ``set_trial_intermediate_value`` store: one query reads the trials' states, and
    the rows of each table go in as one upsert (``_set_rows``; on a database other
    than SQLite and PostgreSQL the rows there are read and updated, the rest added).
    Any other storage, or an Optuna whose models moved, gets the calls one by one.

    Args:
        user_attrs: (trial id, key, JSON-serializable value) triples.
        intermediate: (trial id, step, value) triples.

    Raises:
        KeyError: no trial has one of the ids.
        optuna.exceptions.UpdateFinishedTrialError: one of the trials has finished. On an ``RDBStorage``
            nothing of the batch is written then, nor after any other error.
    """
    if not user_attrs and not intermediate:
        return
    rdb: Any = _backend(storage)  # optuna's _CachedStorage writes through to its backend
    try:
        from optuna.storages._rdb import models
        to_stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
    except (ImportError, AttributeError):
        to_stored = None
    if to_stored is None or not isinstance(rdb, optuna.storages.RDBStorage):
        for trial_id, step, value in intermediate:
            storage.set_trial_intermediate_value(trial_id, step, value)
        for trial_id, key, value in user_attrs:
            storage.set_trial_user_attr(trial_id, key, value)
        return
    if _one_statement(rdb):
        _write_at_once(rdb, to_stored, user_attrs, intermediate)
        return
    with _writing(rdb) as session:  # a refused write (a finished trial) leaves none of the batch behind
        _write_rows(session, to_stored, user_attrs, intermediate)


def _one_statement(rdb: Any) -> bool:
    """Whether ``rdb``'s trial rows are written in one statement (``tuner._pg_rows``): on PostgreSQL."""
    return bool(rdb.engine.dialect.name == "postgresql" and "postgresql" in UPSERTS)


def _write_at_once(rdb: Any, to_stored: Any, user_attrs: Sequence[tuple[int, str, Any]],
                   intermediate: Sequence[tuple[int, int, float]],
                   ending: tuple[int, TrialState, Sequence[float] | None] | None = None) -> None:
    """``_write_rows`` on PostgreSQL: one statement, outside a transaction (atomic on its own), with the same
    checks; when one fails, nothing is written and the error is the one ``_write_rows`` raises."""
    with _as_optuna_raises(), _autocommit(rdb) as con:
        _raise_unless_written(con, write_at_once(con, to_stored, user_attrs, intermediate, ending))


def _raise_unless_written(con: sa.Connection, written: Written) -> None:
    """After a one-statement write (``tuner._pg_rows``) that wrote nothing, the error Optuna's writes raise: the
    trials it checked are read again to say why (no such trial, or one has finished)."""
    if written.ok:
        return
    _running_trials(con, written.checked)
    raise optuna.exceptions.UpdateFinishedTrialError("a trial written has finished meanwhile")


@contextmanager
def _writing(rdb: Any, *, no_autoflush: bool = False) -> Iterator[Any]:
    """One transaction of writes to the ``RDBStorage`` ``rdb``, committed as it ends and rolled back (nothing
    written) when it raises; database errors come out as from Optuna's ``_create_scoped_session``.

    On SQLite and PostgreSQL (``UPSERTS``) a Core connection: regtune's statements there are Core only, and an
    ORM session costs its building and closing on every write. Elsewhere Optuna's ORM session
    (``no_autoflush``: inside ``Session.no_autoflush``).
    """
    from optuna.storages._rdb.storage import _create_scoped_session

    if rdb.engine.dialect.name not in UPSERTS:
        with _create_scoped_session(rdb.scoped_session) as session:
            try:
                if no_autoflush:
                    with session.no_autoflush:
                        yield session
                else:
                    yield session
            except BaseException:
                session.rollback()
                raise
        return
    with _as_optuna_raises(), rdb.engine.begin() as con:
        yield con


@contextmanager
def _autocommit(rdb: Any) -> Iterator[sa.Connection]:
    """A connection of ``rdb``'s engine outside a transaction: each statement is committed as it ends."""
    with rdb.engine.connect() as con:
        yield con.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def _as_optuna_raises() -> Iterator[None]:
    """Database errors inside come out as Optuna's ``_create_scoped_session`` raises them."""
    try:
        yield
    except sa.exc.IntegrityError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise optuna.exceptions.StorageInternalError(
            "An exception is raised during the commit. This typically happens due to invalid data in the "
            "commit, e.g. exceeding max length. ") from exc


def _running_trials(session: Any, ids: Sequence[int], *, lock: bool = False) -> dict[int, Any]:
    """The trials ``ids`` (their id, study and state), every one of them running: checked before anything is
    written. ``lock``: their rows are locked until the transaction ends.

    Raises:
        KeyError: no trial has one of the ids.
        optuna.exceptions.UpdateFinishedTrialError: one of them has finished.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    if not ids:
        return {}
    if _on_sqlite(session):  # which locks nothing: a writer holds the whole database
        found: dict[int, Any] = sqlite_rows.trial_states(session, set(ids))
    else:
        query = sa.select(trials.c.trial_id, trials.c.study_id, trials.c.state).where(trials.c.trial_id.in_(set(ids)))
        found = {row.trial_id: row for row in session.execute(query.with_for_update() if lock else query)}
    for trial_id in dict.fromkeys(ids):
        if trial_id not in found:
            raise KeyError(f"No trial with trial id {trial_id} exists.")
        if found[trial_id].state.is_finished():
            raise UpdateFinishedTrialError(f"trial {trial_id} has already finished ({found[trial_id].state.name}) "
                                           "and can not be updated")
    return found


def _write_rows(session: Any, to_stored: Any, user_attrs: Sequence[tuple[int, str, Any]],
                intermediate: Sequence[tuple[int, int, float]],
                ending: tuple[int, TrialState, Sequence[float] | None] | None = None) -> None:
    """``write_trials``' statements, inside its session; with ``ending`` (trial id, state, values) that trial
    ends too, as ``set_trial_state_values`` ends it.

    The rows go in with ``_set_rows``: one statement a table on SQLite and PostgreSQL.
    """
    from optuna.storages._rdb import models

    table = models.TrialModel.__table__
    ids = [t for t, _, _ in intermediate] + [t for t, _, _ in user_attrs]
    if ending is None or any(t != ending[0] for t in ids):  # rows of other trials: all checked first
        _running_trials(session, ids + ([ending[0]] if ending else []), lock=ending is not None)  # as Optuna
    if ending is not None:
        # the end first, on the condition that the trial runs: the check and the row lock in one statement
        if _on_sqlite(session):
            running = sqlite_rows.end_trial(session, ending[0], ending[1], datetime.now())
        else:
            running = session.execute(sa.update(table).where(table.c.trial_id == ending[0], table.c.state ==
                                                             TrialState.RUNNING)
                                      .values(state=ending[1], datetime_complete=datetime.now())).rowcount == 1
        if not running:
            _running_trials(session, [ending[0]])  # says why: no such trial, or it has finished
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {ending[0]} is not running")
    steps = {(t, step): to_stored(value) for t, step, value in intermediate}  # of a row written twice, the last
    attrs = {(t, key): json.dumps(value) for t, key, value in user_attrs}
    objectives: dict[tuple[int, int], tuple[Any, Any]] = {}
    if ending is not None:
        to_value = models.TrialValueModel.value_to_stored_repr
        objectives = {(ending[0], i): to_value(v) for i, v in enumerate(ending[2] or [])}
    _set_rows(session, models.TrialIntermediateValueModel, "step", ("intermediate_value", "intermediate_value_type"),
              steps)
    _set_rows(session, models.TrialUserAttributeModel, "key", ("value_json",), {k: (v,) for k, v in attrs.items()})
    _set_rows(session, models.TrialValueModel, "objective", ("value", "value_type"), objectives)


@functools.cache
def _upsert(table: sa.Table, owner: str, key: str, columns: tuple[str, ...]) -> Any:
    """PostgreSQL's ``INSERT ... ON CONFLICT (owner, key) DO UPDATE`` of ``columns``, built once and run with a row
    per parameter set (one statement compiled once, not a multi-row VALUES compiled anew for every write); SQLite's
    is ``tuner._sqlite_rows.upsert_rows``."""
    from sqlalchemy.dialects import postgresql

    stmt = postgresql.insert(table)
    return stmt.on_conflict_do_update(index_elements=[owner, key], set_={c: stmt.excluded[c] for c in columns})


def _on_sqlite(session: Any) -> bool:
    """Whether ``session`` is a Core connection to SQLite, where regtune's statements are the driver's SQL
    (``tuner._sqlite_rows``)."""
    return isinstance(session, sa.Connection) and session.dialect.name == "sqlite"


def _set_rows(session: Any, model: Any, key: str, columns: tuple[str, ...],
              rows: dict[tuple[int, Any], tuple[Any, ...]], owner: str = "trial_id") -> None:
    """Set ``(owner id, key) -> column values`` in ``model``'s table (unique on owner and key): on SQLite and
    PostgreSQL one upsert (SQLite's the driver's SQL); elsewhere the rows there are read (one query) and updated,
    the rest added."""
    if not rows:
        return
    if _on_sqlite(session):
        sqlite_rows.upsert_rows(session, model.__table__, owner, key, columns, rows)
        return
    dialect = (session if isinstance(session, sa.Connection) else session.get_bind()).dialect.name
    if dialect in UPSERTS:  # PostgreSQL (SQLite's connections are answered above)
        session.execute(_upsert(model.__table__, owner, key, columns),
                        [{owner: o, key: k, **dict(zip(columns, values, strict=True))}
                         for (o, k), values in rows.items()])
        return
    owners, keys = getattr(model, owner), getattr(model, key)
    have = {(getattr(row, owner), getattr(row, key)): row for row in session.query(model).filter(
        owners.in_({o for o, _ in rows}), keys.in_({k for _, k in rows}))}
    for (owner_id, k), values in rows.items():
        if (row := have.get((owner_id, k))) is None:
            row = model(**{owner: owner_id, key: k})
            session.add(row)
        for name, value in zip(columns, values, strict=True):
            setattr(row, name, value)
