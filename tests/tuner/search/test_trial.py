"""One trial: ``run_trial`` never raises, and a failed trial says why (``fail_trial``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuner import parse_spec
from tuner.search import fail_trial, run_trial
from tuner.search._tell import tell
from tuner.train import load_dataset

Tiny = Callable[..., dict[str, Any]]


def test_a_crash_in_training_fails_the_trial_with_its_reason(tiny: Tiny, sqlite_url: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec(tiny())
    data = load_dataset(spec.dataset, spec.seed)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr("tuner.search._trial.train", crash)
    study = optuna.create_study(storage=sqlite_url, study_name="s")
    trial = study.ask()

    outcome = run_trial(trial, {"l2": 0.01}, spec=spec, data=data, stage="l2")

    assert (outcome.state, outcome.reason, outcome.cancelled) == (
        TrialState.FAIL, "RuntimeError('a bug in the loop')", False)
    attrs = study.trials[0].user_attrs
    assert attrs["fail_reason"] == "RuntimeError('a bug in the loop')" and "interrupted" not in attrs
    assert attrs["stage"] == "l2"


def test_fail_trial_records_an_interruption(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, study_name="s")
    trial = study.ask()

    outcome = fail_trial(trial.storage, trial._trial_id, "the process running it stopped", interrupted=True)

    assert (outcome.state, outcome.reason, outcome.cancelled) == (
        TrialState.FAIL, "the process running it stopped", False)
    assert study.trials[0].user_attrs == {"fail_reason": "the process running it stopped", "interrupted": True}


@pytest.mark.parametrize("hold", [False, True])
def test_a_trial_that_ends_is_recorded_whole_now_or_with_its_end(tiny: Tiny, sqlite_url: str, hold: bool) -> None:
    spec = parse_spec(tiny())
    data = load_dataset(spec.dataset, spec.seed)
    study = optuna.create_study(storage=sqlite_url, study_name="s")
    trial = study.ask()

    outcome = run_trial(trial, {"l2": 0.01}, spec=spec, data=data, stage="l2", hold=hold)

    assert outcome.state == TrialState.COMPLETE and (outcome.unwritten is not None) == hold
    before = optuna.load_study(study_name="s", storage=sqlite_url).trials[0]
    assert ("val_curve" in before.user_attrs) != hold  # held back: written with the trial's end
    tell(study, trial, outcome.values, outcome.state, outcome.unwritten)
    after = optuna.load_study(study_name="s", storage=sqlite_url).trials[0]
    assert after.state == TrialState.COMPLETE and after.user_attrs["stage"] == "l2"
    assert after.user_attrs["val_curve"] == pytest.approx(list(after.intermediate_values.values()), abs=1e-6)
    assert len(after.intermediate_values) == after.user_attrs["epochs"] > 0
