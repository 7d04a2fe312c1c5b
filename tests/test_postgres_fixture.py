"""The database fixtures themselves: a real PostgreSQL per test, and Optuna's storage on every backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna
import sqlalchemy as sa

if TYPE_CHECKING:
    from _postgres import PostgresServer


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def test_postgres_url_is_a_writable_postgres_database(postgres_url: str) -> None:
    engine = _engine(postgres_url)
    with engine.begin() as conn:
        assert conn.dialect.name == "postgresql"
        conn.execute(sa.text("CREATE TABLE trial (id serial PRIMARY KEY, loss double precision NOT NULL)"))
        conn.execute(sa.text("INSERT INTO trial (loss) VALUES (:loss)"), [{"loss": 0.5}, {"loss": 0.25}])
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, loss FROM trial ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [(1, 0.5), (2, 0.25)]


def test_each_database_is_independent_and_dropped_afterwards(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    with postgres_server.database() as other_url:
        assert other_url != postgres_url
        with _engine(postgres_url).begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_here (x int)"))
            conn.execute(sa.text("INSERT INTO only_here VALUES (1)"))
        other = _engine(other_url)
        with other.connect() as conn:
            assert not sa.inspect(conn).has_table("only_here")
        # A connection left open must not keep the database alive: it is dropped WITH (FORCE).
        lingering = sa.create_engine(other_url).connect()
    with _engine(postgres_url).connect() as conn:
        name = sa.make_url(other_url).database
        exists = conn.execute(sa.text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name})
        assert exists.scalar_one() == 0
    lingering.invalidate()


def test_postgres_url_form(postgres_url: str, postgres_server: PostgresServer) -> None:
    url = sa.make_url(postgres_url)
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "127.0.0.1", postgres_server.port)
    assert url.username and url.password and url.database


def test_optuna_rdb_storage_round_trip(storage_url: str) -> None:
    study = optuna.create_study(storage=storage_url, study_name="x")
    study.optimize(lambda trial: (trial.suggest_float("l2", 1e-6, 1e-2, log=True) - 1e-3) ** 2, n_trials=3)
    loaded = optuna.load_study(storage=storage_url, study_name="x")
    complete = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3
    assert loaded.best_value == min(t.value for t in complete if t.value is not None)
