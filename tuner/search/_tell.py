"""Telling a study how a trial ended, with one read of the trial instead of Optuna's two."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.search._trial import Unwritten
from tuner.storage import finish_trial, write_trials

__all__ = ["tell"]


def tell(study: optuna.Study, trial: optuna.Trial | int, values: Sequence[float] | None,
         state: TrialState, unwritten: Unwritten | None = None) -> FrozenTrial:
    """``study.tell(trial, values, state=state)``, for a state that is given (COMPLETE, PRUNED or FAIL).

    Optuna's ``tell`` reads the trial to check it, and reads it once more to return it.
    Here the first read is returned, with what was told: its state, its values (a pruned
    trial's last report, as Optuna stores it) and its completion time as this process saw
    it (the stored one is taken a moment later, in the same call). The checks and the
    sampler's ``after_trial`` are Optuna's own, in its order; the write is ``finish_trial``
    (``set_trial_state_values`` on a storage other than regtune's). An Optuna without these
    internals gets its own ``tell``.

    With ``unwritten`` (a trial whose recorder held back its last reports and attributes) the
    trial is not read at all: the recorder's view of it is what the checks and the sampler
    see, and the held rows are written in the transaction that ends the trial (``finish_trial``).

    Raises:
        ValueError: the trial is not running, or the values do not fit the state or the study.
        optuna.exceptions.UpdateFinishedTrialError: another process finished it in the meantime.
    """
    try:
        from optuna import pruners
        from optuna.study._tell import _check_state_and_values, _check_values_are_feasible, _get_frozen_trial
    except ImportError:  # pragma: no cover - an Optuna that moved them
        if unwritten is not None:
            write_trials(study._storage, user_attrs=unwritten.user_attrs, intermediate=unwritten.intermediate)
        return study.tell(trial, values, state=state)
    study._thread_local.cached_all_trials = None  # as Optuna: the thread's cached view is stale now
    frozen = unwritten.trial if unwritten is not None else _get_frozen_trial(study, trial)
    if frozen.state != TrialState.RUNNING:
        raise ValueError(f"Cannot tell a {frozen.state.name} trial.")
    told = None if values is None else list(values)
    _check_state_and_values(state, told)
    if state == TrialState.COMPLETE:
        assert told is not None
        if (why := _check_values_are_feasible(study, told)) is not None:
            raise ValueError(why)
    elif state == TrialState.PRUNED and frozen.last_step is not None:
        last = frozen.intermediate_values[frozen.last_step]
        if _check_values_are_feasible(study, [last]) is None:  # a NaN report is not a value
            told = [last]
    told = None if told is None else [float(v) for v in told]
    try:
        study.sampler.after_trial(pruners._filter_study(study, frozen), frozen, state, told)
    finally:
        finish_trial(study._storage, frozen._trial_id, state, told,
                     user_attrs=unwritten.user_attrs if unwritten else (),
                     intermediate=unwritten.intermediate if unwritten else ())
    done = copy.deepcopy(frozen)
    done.state, done.values, done.datetime_complete = state, told, datetime.now()
    return done
