"""The thread backend when a trial's own bookkeeping fails: every trial ends finished or aborted, and the stage
says why it stopped, never "last failure: None" after a worker thread died."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuner import RegtuneError, parse_spec, run_job, study_name
from tuner.storage import TrialStorage

Tiny = Callable[..., dict[str, Any]]


def test_a_trial_taken_back_while_it_ran_ends_the_stage_with_its_reason(tiny: Tiny, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A reclaimer marked the trial failed; then the trial crashed: recording its failure raises too."""
    url = f"sqlite:///{tmp_path}/stages.db"

    def taken_back(trial: optuna.Trial, *args: Any, **kwargs: Any) -> Any:
        storage = trial.study._storage
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # as a reclaimer would
        raise RuntimeError("the trial crashed")

    monkeypatch.setattr("tuner.search._trial._run_trial", taken_back)  # inside run_trial's crash guard
    spec = parse_spec(tiny(search={"stages": [{"name": "baseline", "params": [], "trials": 1}]}))
    with pytest.raises(RegtuneError) as info:
        run_job(spec, storage=url, prefix="taken")
    message = str(info.value)
    assert "last failure: None" not in message
    assert "recording trial 0 failed" in message and "RuntimeError('the trial crashed')" in message
    study = optuna.load_study(study_name=study_name("taken", "baseline"), storage=url)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]  # one attempt, no thread left behind


def test_a_study_that_cannot_start_a_trial_says_so(tiny: Tiny, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: TrialStorage, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(TrialStorage, "_create_new_trial", refuse)  # what a new trial writes first
    spec = parse_spec(tiny(search={"stages": [{"name": "baseline", "params": [], "trials": 2}]}))
    with pytest.raises(RegtuneError, match=r"starting a trial failed .*: RuntimeError\('the database went away'\)"
                       ) as info:
        run_job(spec, storage=f"sqlite:///{tmp_path}/ask.db", prefix="noask")
    assert isinstance(info.value.__cause__, RuntimeError)  # a runner can tell what broke (the database?)
