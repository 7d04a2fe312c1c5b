"""Telling a study how a trial ended: what Optuna's ``tell`` stores, with one read of the trial."""

from __future__ import annotations

import copy
import math
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuner.search._tell import tell
from tuner.search._trial import Unwritten
from tuner.storage import TrialStorage, open_storage

CASES: list[tuple[TrialState, list[float] | None, list[float]]] = [  # state, values told, reports before
    (TrialState.COMPLETE, [0.25], [0.5, 0.3]),
    (TrialState.PRUNED, None, [0.5, 0.4]),  # a pruned trial's value is its last report
    (TrialState.PRUNED, None, [0.5, float("nan")]),  # ... unless that is NaN
    (TrialState.PRUNED, None, []),
    (TrialState.FAIL, None, [0.5]),
]


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the trials ``TrialStorage.get_trial`` reads from now on."""
    reads: list[int] = []
    read = TrialStorage.get_trial

    def counted(self: TrialStorage, trial_id: int) -> Any:
        reads.append(trial_id)
        return read(self, trial_id)

    monkeypatch.setattr(TrialStorage, "get_trial", counted)
    return reads


class _Watching(optuna.samplers.RandomSampler):
    """A sampler that keeps what ``after_trial`` is told: (trial, state, values)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[optuna.trial.FrozenTrial, TrialState, list[float] | None]] = []

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self.seen.append((trial, state, values))


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("state", "values", "reports"), CASES)
def test_tell_stores_what_optunas_tell_stores_and_reads_the_trial_once(
        storage_url: str, monkeypatch: pytest.MonkeyPatch, state: TrialState, values: list[float] | None,
        reports: list[float]) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="t", storage=storage)
    ours, theirs = study.ask(), study.ask()
    for trial in (ours, theirs):
        trial.suggest_float("l2", 1e-6, 1e-2, log=True)
        for step, value in enumerate(reports):
            trial.report(value, step)
    reads = _count_reads(monkeypatch)
    told = tell(study, ours, values, state)
    assert reads == [ours._trial_id]
    want = study.tell(theirs, values, state=state)
    assert len(reads) == 3  # Optuna's reads it twice
    a, b = (storage.get_trial(t._trial_id) for t in (ours, theirs))
    assert (a.state, str(a.values), str(a.intermediate_values)) == (b.state, str(b.values), str(b.intermediate_values))
    assert a.params == ours.params
    assert (told.state, str(told.values), told.number) == (want.state, str(want.values), ours.number)
    assert told.datetime_complete is not None and a.datetime_complete is not None
    assert abs((told.datetime_complete - a.datetime_complete).total_seconds()) < 5
    if state == TrialState.PRUNED and reports and not math.isnan(reports[-1]):
        assert a.values == [reports[-1]]


def test_tell_refuses_what_optuna_refuses() -> None:
    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(ValueError, match="not acceptable"):
        tell(study, trial, [float("nan")], TrialState.COMPLETE)
    with pytest.raises(ValueError, match="Values are required"):
        tell(study, trial, None, TrialState.COMPLETE)
    with pytest.raises(ValueError, match="Values were told"):
        tell(study, trial, [1.0], TrialState.FAIL)
    assert study.trials[0].state == TrialState.RUNNING  # nothing was written
    tell(study, trial.number, [1.0], TrialState.COMPLETE)  # by number, as the Ray driver tells
    with pytest.raises(ValueError, match="Cannot tell a COMPLETE trial"):
        tell(study, trial, [2.0], TrialState.COMPLETE)
    assert study.trials[0].values == [1.0]


def test_tell_lets_the_sampler_see_the_trial_end() -> None:
    sampler = _Watching()
    study = optuna.create_study(sampler=sampler)
    trial = study.ask()
    trial.report(0.7, 0)
    tell(study, trial, None, TrialState.PRUNED)
    assert [(t.number, state, values) for t, state, values in sampler.seen] == [(0, TrialState.PRUNED, [0.7])]


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_trial_whose_rows_were_held_back_is_told_without_a_read_and_written_with_its_end(
        storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = _Watching()
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="h", storage=storage, sampler=sampler)
    trial = study.ask()
    trial.suggest_float("l2", 1e-6, 1e-2, log=True)
    known = copy.deepcopy(trial._cached_frozen_trial)
    known.intermediate_values = {0: 0.5, 1: 0.4}
    held = Unwritten(known, [(trial._trial_id, "epochs", 2)], [(trial._trial_id, 0, 0.5), (trial._trial_id, 1, 0.4)])
    reads = _count_reads(monkeypatch)
    told = tell(study, trial, None, TrialState.PRUNED, held)
    assert reads == [] and [t for t, _, _ in sampler.seen] == [known]
    stored = storage.get_trial(trial._trial_id)
    assert (stored.state, stored.values, stored.user_attrs, stored.intermediate_values) == (
        TrialState.PRUNED, [0.4], {"epochs": 2}, {0: 0.5, 1: 0.4})  # a pruned trial's value: its last report
    assert (told.state, told.values, told.params) == (TrialState.PRUNED, [0.4], stored.params)
