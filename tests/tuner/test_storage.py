"""Optuna storage: several trials' writes in one transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import optuna
import pytest
from sqlalchemy import event

from tuner.storage import open_storage, write_trials


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_write_trials_stores_every_value_in_one_commit(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="w", storage=storage)
    trials = [study.ask() for _ in range(3)]
    commits: list[int] = []

    def count(_conn: object) -> None:
        commits.append(1)

    event.listen(storage.engine, "commit", count)
    try:
        write_trials(study._storage,
                     intermediate=[(t._trial_id, step, 0.5 / step + t.number) for t in trials for step in (1, 2)],
                     user_attrs=[(t._trial_id, "stage", "l2") for t in trials] + [(trials[0]._trial_id, "n", [1, 2])])
    finally:
        event.remove(storage.engine, "commit", count)
    assert len(commits) == 1
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
def test_write_trials_updates_what_is_there_and_stores_what_optuna_stores(storage_url: str) -> None:
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
