"""Optuna storage: several trials' writes in one transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from _postgres import PostgresServer
from optuna.trial import TrialState
from sqlalchemy import event

import tuner._sqlite_rows
import tuner.storage
from tuner.storage import (
    engine_kwargs,
    finish_trial,
    new_trial,
    new_trial_reading,
    open_storage,
    ping_idle_connections,
    together,
    write_trials,
)


@pytest.fixture(params=["upserted", "read-then-written"])
def rows_written(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Rows written as upserts (SQLite, PostgreSQL), then as on a database without ``INSERT ... ON CONFLICT``."""
    if request.param == "read-then-written":
        monkeypatch.setattr(tuner.storage, "UPSERTS", ())
    return str(request.param)


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_write_trials_stores_every_value_in_one_commit(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="w", storage=storage)
    trials = [study.ask() for _ in range(3)]
    with _Statements(storage.engine) as seen:
        write_trials(study._storage,
                     intermediate=[(t._trial_id, step, 0.5 / step + t.number) for t in trials for step in (1, 2)],
                     user_attrs=[(t._trial_id, "stage", "l2") for t in trials] + [(trials[0]._trial_id, "n", [1, 2])])
    assert seen.one_write()
    stored = optuna.load_study(study_name="w", storage=storage_url).get_trials(deepcopy=False)
    for t in stored:
        assert t.intermediate_values == {1: 0.5 + t.number, 2: 0.25 + t.number}
        assert t.user_attrs["stage"] == "l2"
    assert stored[0].user_attrs["n"] == [1, 2]


def test_write_trials_on_a_storage_without_sessions_writes_one_by_one() -> None:
    study = optuna.create_study()  # in memory
    trial = study.ask()
    write_trials(study._storage, intermediate=[(trial._trial_id, 1, 0.3)], user_attrs=[(trial._trial_id, "k", 1)])
    frozen = study.trials[0]
    assert (frozen.intermediate_values, frozen.user_attrs) == ({1: 0.3}, {"k": 1})


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_failed_batch_writes_nothing(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="f", storage=storage)
    running, finished = study.ask(), study.ask()
    study.tell(finished, 1.0)
    with pytest.raises(RuntimeError):  # a finished trial cannot be updated: the whole transaction rolls back
        write_trials(study._storage, intermediate=[(running._trial_id, 1, 0.1), (finished._trial_id, 1, 0.2)])
    assert optuna.load_study(study_name="f", storage=storage_url).trials[0].intermediate_values == {}


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_write_trials_updates_what_is_there_and_stores_what_optuna_stores(
        storage_url: str, rows_written: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="u", storage=storage)
    ours, optunas = study.ask(), study.ask()
    for trial_id in (ours._trial_id, optunas._trial_id):
        storage.set_trial_user_attr(trial_id, "epochs", 1)
        storage.set_trial_intermediate_value(trial_id, 1, 0.5)
    values = {"epochs": 3, "curve": [0.5, float("inf")], "note": "ü"}
    write_trials(study._storage, user_attrs=[(ours._trial_id, k, v) for k, v in values.items()],
                 intermediate=[(ours._trial_id, 1, 0.25), (ours._trial_id, 2, float("nan")),
                               (ours._trial_id, 3, float("inf"))])
    for key, value in values.items():  # what Optuna's own calls store, read back the same way
        storage.set_trial_user_attr(optunas._trial_id, key, value)
    storage.set_trial_intermediate_value(optunas._trial_id, 1, 0.25)
    storage.set_trial_intermediate_value(optunas._trial_id, 2, float("nan"))
    storage.set_trial_intermediate_value(optunas._trial_id, 3, float("inf"))
    a, b = optuna.load_study(study_name="u", storage=storage_url).get_trials(deepcopy=False)
    assert a.user_attrs == b.user_attrs == values
    assert str(a.intermediate_values) == str(b.intermediate_values) == str({1: 0.25, 2: float("nan"), 3: float("inf")})
    with pytest.raises(KeyError):
        write_trials(study._storage, user_attrs=[(10_000, "k", 1)])


def _fill(storage: optuna.storages.BaseStorage) -> optuna.Study:
    """A study holding what trials can hold: every state, each kind of parameter, NaN and inf, JSON attributes."""
    study = optuna.create_study(study_name="r", storage=storage, directions=["minimize", "maximize"])
    for n in range(7):
        trial = study.ask()
        trial.suggest_float("l2", 1e-6, 1e-2, log=True)
        trial.suggest_int("layers", 1, 4)
        trial.suggest_categorical("act", ["relu", None, 2.5])
        if n % 2:
            trial.suggest_float("step", 0.0, 1.0, step=0.25)
        for step, value in enumerate([0.5, float("nan"), float("-inf"), 0.25][: n % 5]):
            storage.set_trial_intermediate_value(trial._trial_id, step, value)
        trial.set_user_attr("curve", [0.5, n, "ü", None])
        trial.set_user_attr("best_epoch", n)
        storage.set_trial_system_attr(trial._trial_id, "why", {"n": n})
        if n == 0:
            continue  # RUNNING
        if n == 1:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif n == 2:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [0.1 * n, float("inf") if n == 3 else -float(n)])
    study.enqueue_trial({"l2": 1e-3})  # WAITING
    study.set_user_attr("spec", {"seed": 0, "knobs": ["l1", "l2"], "note": "ü"})
    study.set_user_attr("budget", 7)
    return study


def _seen(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """Trials as text (NaN is not equal to itself, its text is), each mapping in key order (rows come in any)."""
    return [repr([(k, sorted(v.items()) if isinstance(v, dict) else v) for k, v in sorted(vars(t).items())])
            for t in trials]


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_trials_read_back_as_optunas_own_reader_reads_them(storage_url: str) -> None:
    ours = open_storage(storage_url)
    study = _fill(ours)
    theirs = optuna.storages.RDBStorage(storage_url)  # Optuna's ORM reader, on the same database
    assert type(theirs)._get_trials is not type(ours)._get_trials
    sid = study._study_id
    ids = [t._trial_id for t in theirs.get_all_trials(sid)]
    states = [None, (optuna.trial.TrialState.COMPLETE,),
              (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING, optuna.trial.TrialState.PRUNED)]
    cuts = [(set(), -1), (set(), ids[3]), ({ids[0], ids[2]}, ids[4]), ({ids[0], ids[-1]}, ids[1]), ({ids[1]}, -1)]
    for state in states:
        for included, greater in cuts:
            want = _seen(theirs._get_trials(sid, state, set(included), greater))
            assert _seen(ours._get_trials(sid, state, set(included), greater)) == want, (state, included, greater)
    assert len(theirs._get_trials(sid, None, set(), -1)) == 8
    for trial_id in ids:
        assert _seen([ours.get_trial(trial_id)]) == _seen([theirs.get_trial(trial_id)])
    with pytest.raises(KeyError):
        ours.get_trial(max(ids) + 100)
    with pytest.raises(KeyError):
        ours._get_trials(sid + 100, None, set(), -1)
    for attrs in ("get_study_user_attrs", "get_study_system_attrs"):  # the study's attributes, in one statement
        assert getattr(ours, attrs)(sid) == getattr(theirs, attrs)(sid)
        with pytest.raises(KeyError):
            getattr(ours, attrs)(sid + 100)
    bare = optuna.create_study(study_name="bare", storage=ours)._study_id
    assert ours.get_study_user_attrs(bare) == theirs.get_study_user_attrs(bare) == {}
    loaded = optuna.load_study(study_name="r", storage=ours)  # through Optuna's cache, as samplers read
    assert _seen(loaded.get_trials()) == _seen(theirs.get_all_trials(sid))


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_a_read_of_a_studys_trials_is_one_statement(storage_url: str) -> None:
    """The trials and their five tables' rows in one ``UNION ALL`` (``tuner._pg_rows``, ``tuner._sqlite_rows``)."""
    ours = open_storage(storage_url)
    study = _fill(ours)
    with _Statements(ours.engine) as seen:
        found = ours._get_trials(study._study_id, None, set(), -1)
        running = ours._get_trials(study._study_id, (TrialState.RUNNING,), set(), -1)
    assert len(seen.sent) == 2 and seen.commits == 0
    assert len(found) == 8 and [t.number for t in running] == [0]


def test_a_sqlite_that_cannot_run_the_one_statement_read_is_read_as_before(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLite built without its JSON functions: the read fails, and the trials are read table by table."""
    ours = open_storage(sqlite_url)
    study = _fill(ours)
    sid = study._study_id
    cuts = [(None, set(), -1), ((TrialState.COMPLETE,), set(), -1), (None, {1, 3}, 4)]
    want = [_seen(ours._get_trials(sid, *cut)) for cut in cuts]
    monkeypatch.setattr(tuner._sqlite_rows, "_read_sql", lambda *_: "SELECT no_such_function(:study)")
    with _Statements(ours.engine) as seen:
        assert [_seen(ours._get_trials(sid, *cut)) for cut in cuts] == want
    assert "no_such_function" in seen.sent[0]
    assert len(seen.sent) > 2 * len(cuts)  # each time the failed statement, then the trials and each table


def test_rows_written_on_sqlite_are_stored_as_sqlalchemy_stores_them(sqlite_url: str) -> None:
    """``tuner._sqlite_rows`` writes the driver's SQL: its times, states and value types are the text Optuna's own
    writes (through SQLAlchemy) leave in the file."""
    ours, theirs = open_storage(sqlite_url), optuna.storages.RDBStorage(sqlite_url)
    sid = optuna.create_study(study_name="w", storage=ours)._study_id
    a, b = ours.create_new_trial(sid), theirs.create_new_trial(sid)
    steps = [(0, 0.5), (1, float("nan")), (2, float("inf"))]
    finish_trial(ours, a, TrialState.COMPLETE, [float("-inf")], user_attrs=[(a, "k", [1, "ü"])],
                 intermediate=[(a, step, value) for step, value in steps])
    theirs.set_trial_user_attr(b, "k", [1, "ü"])
    for step, value in steps:
        theirs.set_trial_intermediate_value(b, step, value)
    theirs.set_trial_state_values(b, TrialState.COMPLETE, [float("-inf")])
    queries = {
        "trials": "SELECT state, typeof(datetime_start), length(datetime_start), typeof(datetime_complete), "
                  "length(datetime_complete) FROM trials WHERE trial_id = ?",
        "values": "SELECT objective, value, value_type FROM trial_values WHERE trial_id = ?",
        "attrs": "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = ?",
        "steps": "SELECT step, typeof(intermediate_value), intermediate_value, intermediate_value_type "
                 "FROM trial_intermediate_values WHERE trial_id = ? ORDER BY step",
    }
    with ours.engine.connect() as con:
        raw = con.connection.driver_connection
        for name, query in queries.items():
            mine, optunas = (raw.execute(query, (t,)).fetchall() for t in (a, b))
            assert mine == optunas and mine, name
    mine, optunas = ours._get_trials(sid, None, set(), -1)[0], theirs.get_trial(b)  # read back in one statement
    assert (mine.state, mine.values, mine.user_attrs) == (optunas.state, optunas.values, optunas.user_attrs)
    assert str(mine.intermediate_values) == str(optunas.intermediate_values)  # NaN as text: equal to itself


class _Statements:
    """The statements and commits an engine sends while inside."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.sent, self.commits = engine, [], 0

    def _statement(self, _conn: object, _cursor: object, statement: str, *_: object) -> None:
        self.sent.append(statement)

    def _commit(self, _conn: object) -> None:
        self.commits += 1

    def one_write(self) -> bool:
        """Whether what was written is one transaction: one commit; on PostgreSQL, where regtune writes a trial's
        rows in one statement outside a transaction (atomic on its own), one statement that writes and no commit."""
        if self.engine.dialect.name == "postgresql" and "postgresql" in tuner.storage.UPSERTS:
            writes = [s for s in self.sent if "INSERT INTO" in s or s.lstrip().startswith("UPDATE")]
            return self.commits == 0 and len(writes) == 1
        return self.commits == 1

    def reads(self, table: str) -> int:
        """How many statements selected from ``table``."""
        return sum(s.lstrip().upper().startswith(("SELECT", "WITH")) and f"FROM {table}" in s for s in self.sent)

    def __enter__(self) -> _Statements:
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_a_new_trial_is_not_read_back_and_later_reads_see_the_database(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="n", storage=storage)
    with _Statements(storage.engine) as asked:
        study.ask()  # Optuna's own: looks for a waiting trial, creates one and reads it back
    with _Statements(storage.engine) as seen:
        trial = new_trial(study)
    assert asked.reads("trial_params") > 0 and asked.reads("trial_user_attributes") > 0
    assert seen.reads("trial_params") == seen.reads("trial_user_attributes") == 0  # nothing read back
    pipelined = storage.engine.dialect.name == "postgresql"  # made in one round trip, on psycopg's connection
    assert seen.commits == asked.commits == (0 if pipelined else 1)
    assert (trial.number, trial._cached_frozen_trial.state, trial.params) == (1, TrialState.RUNNING, {})
    stored = storage.get_trial(trial._trial_id)
    assert (stored.number, stored.datetime_start) == (1, trial._cached_frozen_trial.datetime_start)
    storage.set_trial_user_attr(trial._trial_id, "k", 1)
    assert storage.get_trial(trial._trial_id).user_attrs == {"k": 1}  # after the scope: read from the database
    study.enqueue_trial({"x": 0.5})  # a trial made from a template is not kept, even inside the scope
    with storage.fresh_trials():
        waiting = study._storage.get_all_trials(study._study_id, states=(TrialState.WAITING,))[0]
        storage.set_trial_user_attr(waiting._trial_id, "k", 2)
        assert storage.get_trial(waiting._trial_id).user_attrs == {"k": 2}
    with pytest.raises(KeyError):  # no such study: nothing is made
        storage.create_new_trial(study._study_id + 100)
    assert [t.number for t in storage.get_all_trials(study._study_id)] == [0, 1, 2]


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_a_read_asked_again_inside_together_is_answered_from_the_first(storage_url: str) -> None:
    """A TPE ask reads the study's trials twice (its search space, then its sample) inside one ``together``."""
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="r", storage=storage)
    done = study.ask()
    done.suggest_float("x", 0.0, 1.0)
    study.tell(done, 0.5)
    running = study.ask()

    def read() -> list[optuna.trial.FrozenTrial]:
        return storage._get_trials(study._study_id, None, {running._trial_id}, -1)

    with _Statements(storage.engine) as outside:
        first, second = read(), read()
    with together(storage):
        with _Statements(storage.engine) as inside:
            third, fourth = read(), read()
            # as Optuna's cache asks after a read that showed a finished trial: trials the first read holds
            later = storage._get_trials(study._study_id, None, {running._trial_id}, done._trial_id)
        with _Statements(storage.engine) as other:
            elsewhere = storage._get_trials(study._study_id, (TrialState.COMPLETE,), set(), -1)
    assert len(outside.sent) == 2 * len(inside.sent) > 0  # the repeated read sent nothing
    assert other.sent  # other arguments: read from the database
    assert _seen(first) == _seen(second) == _seen(third) == _seen(fourth)
    assert _seen(later) == _seen(first[1:])  # the running trial alone, and nothing sent for it
    assert [t.number for t in elsewhere] == [0]
    storage.set_trial_user_attr(running._trial_id, "k", 1)
    with together(storage):  # a new scope reads the database again
        assert [t.user_attrs for t in read()] == [{}, {"k": 1}]


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_a_new_trial_comes_with_the_read_its_sampler_makes_next(storage_url: str) -> None:
    """TPE with ``constant_liar`` reads the running trials through Optuna's cache at every ask: on PostgreSQL that
    read is made with the trial, in its round trip, and answers the sampler's."""
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="a", storage=storage, sampler=optuna.samplers.TPESampler(
        constant_liar=True, n_startup_trials=1, seed=0))
    done = study.ask()
    done.suggest_float("x", 0.0, 1.0)
    study.tell(done, 0.5)
    running = study.ask()
    running.suggest_float("x", 0.0, 1.0)
    running.report(0.7, 0)
    study.get_trials()  # the cache now knows the finished trial and the running one
    trial, read = new_trial_reading(study)
    if storage.engine.dialect.name != "postgresql":
        assert read is None  # nothing to save: SQLite has no round trips
        return
    assert read is not None
    sid, (_, _, included, after) = study._study_id, read.key
    assert (included, after) == ({running._trial_id}, done._trial_id)  # what the cache asks for
    assert _seen(read.trials) == _seen(storage._get_trials(sid, None, included, after))  # as read after it
    assert [t.number for t in read.trials] == [1, 2] and read.trials[0].params == running.params
    with together(study._storage, read), _Statements(storage.engine) as seen:
        x = trial.suggest_float("x", 0.0, 1.0)  # TPE's sample, from the read
    assert seen.reads("trials") == 0 and 0.0 <= x <= 1.0
    assert storage.get_trial(trial._trial_id).params == {"x": x}


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_parameters_and_attributes_set_together_are_one_commit_and_stored_as_optuna_stores_them(
        storage_url: str, rows_written: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="p", storage=storage, sampler=optuna.samplers.RandomSampler(seed=3))

    def suggest(trial: optuna.Trial) -> None:
        trial.suggest_float("l2", 1e-6, 1e-2, log=True)
        trial.suggest_int("n", 1, 4)
        trial.suggest_categorical("act", ["relu", "tanh"])

    alone, joint = study.ask(), study.ask()
    with _Statements(storage.engine) as one_by_one:
        suggest(alone)
    with _Statements(storage.engine) as seen, together(study._storage):
        suggest(joint)
        with together(study._storage):  # a nested scope writes with the outer one
            storage.set_trial_system_attr(joint._trial_id, "why", {"n": [1, None]})
            study.set_user_attr("stage", "l2")
            study.set_user_attr("params", ["l1", "l2"])
        assert seen.commits == 0  # queued until the scope ends
        study.set_user_attr("stage", "dropout")  # in order: the last write of a key stays
    assert one_by_one.commits == 3 and seen.one_write()
    for trial in (alone, joint):
        stored = storage.get_trial(trial._trial_id)
        assert stored.params == trial.params and stored.distributions == alone.distributions
    assert storage.get_trial(joint._trial_id).system_attrs == {"why": {"n": [1, None]}}
    assert optuna.load_study(study_name="p", storage=storage_url).user_attrs == {"stage": "dropout",
                                                                                 "params": ["l1", "l2"]}
    with pytest.raises(ValueError, match="Cannot set different distribution"), together(study._storage):
        study.ask().suggest_int("l2", 1, 4)  # checked against the study's earlier trials, as one by one
    finished = study.ask()
    study.tell(finished, 1.0)
    with pytest.raises(RuntimeError), together(study._storage):  # a finished trial takes no parameter
        storage.set_trial_param(finished._trial_id, "z", 0.5, optuna.distributions.FloatDistribution(0, 1))
    assert "z" not in storage.get_trial(finished._trial_id).params
    running, l2 = study.ask(), alone.distributions["l2"]
    with pytest.raises(RuntimeError), together(study._storage):  # the distribution known: checked in the write
        storage.set_trial_system_attr(running._trial_id, "why", "kept?")
        storage._set_trial_param(finished._trial_id, "l2", 1e-3, l2, l2)
    assert "l2" not in storage.get_trial(finished._trial_id).params
    assert storage.get_trial(running._trial_id).system_attrs == {}  # nothing of the write


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_a_trial_ends_with_its_last_rows_in_one_commit_and_is_stored_as_optuna_stores_it(
        storage_url: str, rows_written: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="e", storage=storage)
    ours, optunas, other = study.ask(), study.ask(), study.ask()
    rows = {"user_attrs": [(ours._trial_id, "epochs", 2), (other._trial_id, "stage", "l2")],
            "intermediate": [(ours._trial_id, 0, 0.5), (ours._trial_id, 1, 0.25), (other._trial_id, 0, 0.7)]}
    with _Statements(storage.engine) as seen:
        finish_trial(study._storage, ours._trial_id, TrialState.COMPLETE, [0.25], **rows)
    assert seen.one_write()
    optunas.set_user_attr("epochs", 2)
    for step, value in enumerate([0.5, 0.25]):
        storage.set_trial_intermediate_value(optunas._trial_id, step, value)
    storage.set_trial_state_values(optunas._trial_id, TrialState.COMPLETE, [0.25])
    a, b, c = (storage.get_trial(t._trial_id) for t in (ours, optunas, other))
    assert (a.state, a.values, a.user_attrs, a.intermediate_values) == (
        b.state, b.values, b.user_attrs, b.intermediate_values)
    assert a.datetime_complete is not None
    assert (c.state, c.user_attrs, c.intermediate_values) == (TrialState.RUNNING, {"stage": "l2"}, {0: 0.7})
    with pytest.raises(RuntimeError):  # a finished trial: nothing of the transaction is written
        finish_trial(study._storage, ours._trial_id, TrialState.PRUNED, None,
                     user_attrs=[(other._trial_id, "more", 1)])
    assert storage.get_trial(other._trial_id).user_attrs == {"stage": "l2"}
    assert storage.get_trial(ours._trial_id).state == TrialState.COMPLETE


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_trials_made_at_once_by_many_threads_are_numbered_in_order_without_gaps(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="c", storage=storage)
    other = optuna.create_study(study_name="o", storage=storage)
    study.enqueue_trial({"x": 0.5})  # a trial made from a template (Optuna's own code) is counted too
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda i: storage.create_new_trial((study if i % 3 else other)._study_id), range(24)))
    for s in (study, other):
        stored = sorted(storage.get_all_trials(s._study_id), key=lambda t: t._trial_id)
        assert [t.number for t in stored] == list(range(len(stored)))  # in the order of their ids
    assert len(made) == len(set(made)) == 24
    with pytest.raises(KeyError):
        storage.create_new_trial(other._study_id + 100)


@pytest.mark.postgres
def test_a_pooled_connection_is_pinged_only_after_sitting_idle_and_a_dead_one_is_replaced(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection used less than ``PING_IDLE_S`` ago is handed out as it is; one idle longer is pinged first,
    and one whose server process is gone (a restart, a dropped network) is replaced, unseen by the caller."""
    monkeypatch.setattr(tuner.storage, "PING_IDLE_S", 0.3)
    engine = sa.create_engine(postgres_url, **engine_kwargs(postgres_url))
    ping_idle_connections(engine)
    pinged: list[Any] = []
    do_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda con: pinged.append(con) or do_ping(con))
    server_pid = sa.text("SELECT pg_backend_pid()")
    try:
        with engine.connect() as con:
            first = con.execute(server_pid).scalar()
        with engine.connect() as con:
            assert con.execute(server_pid).scalar() == first  # the same connection, not pinged
        assert pinged == []
        killer = sa.create_engine(postgres_url, poolclass=sa.NullPool)
        with killer.connect() as con:
            assert con.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
        killer.dispose()
        time.sleep(0.4)
        with engine.connect() as con:
            assert con.execute(server_pid).scalar() not in (first, None)
        assert len(pinged) == 1
    finally:
        engine.dispose()


def test_a_trial_made_on_a_connection_the_server_dropped_is_made_on_another(
        postgres_server: PostgresServer, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a trial is made in one pipelined round trip; on a pooled connection the server dropped (a
    restart), that fails, the connection leaves the pool, and the trial is made on a new one, numbered next."""
    monkeypatch.setattr(tuner.storage, "PING_IDLE_S", math.inf)  # the pool hands out the dead connection
    storage = open_storage(postgres_url)
    study = optuna.create_study(study_name="dropped", storage=storage)
    study.ask()
    postgres_server.stop()
    postgres_server.start()
    made = [storage.create_new_trial(study._study_id) for _ in range(2)]
    assert [storage.get_trial(t).number for t in made] == [1, 2]
    assert [t.number for t in storage.get_all_trials(study._study_id)] == [0, 1, 2]
