"""The thread backend: which threads train, how Ctrl-C reaches a stage, and what happens when a trial's own
bookkeeping fails: every trial ends finished or aborted, and the stage says why it stopped, never "last
failure: None" after a worker thread died."""

from __future__ import annotations

import inspect
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuner import Cancelled, RegtuneError, parse_spec, run_job, study_name
from tuner.search import _trial
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
    spec = parse_spec(tiny(search={"batch": 1,  # the lone loop: ``auto`` trains even one trial batched
                                   "stages": [{"name": "baseline", "params": [], "trials": 1}]}))
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


def _training_threads(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """Record the thread each trial of this process trains in."""
    seen: list[threading.Thread] = []
    train = _trial.train

    def recorded(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread())
        return train(*args, **kwargs)

    monkeypatch.setattr(_trial, "train", recorded)
    return seen


@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_calling_thread_is_the_first_worker(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                parallelism: int) -> None:
    """Torch's OpenMP threads belong to the thread that starts them: a stage trained only in new threads
    would start a second set beside the caller's, which GNU OpenMP then puts to sleep between regions."""
    seen = _training_threads(monkeypatch)
    spec = parse_spec(tiny(search={"parallelism": parallelism, "batch": 1, "space": {"dropout": None}, "stages": [
        {"name": "baseline", "params": [], "trials": 1}, {"name": "l2", "params": ["l2"], "trials": 4}]}))
    run_job(spec, storage=f"sqlite:///{tmp_path}/who.db", prefix="who")
    assert len(seen) == 5
    here = threading.current_thread()
    if parallelism == 1:
        assert set(seen) == {here}  # no thread is started
    else:
        assert here in seen and len(set(seen)) <= 3  # it trains beside one thread per stage


def test_ctrl_c_in_a_stage_calls_the_handler_installed_before_it(tiny: Tiny, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner's own SIGINT handler (stop after this epoch, give the job back) still gets the signal while
    a stage trains in the main thread, and the stage's handler is gone once the job ends."""
    assert threading.current_thread() is threading.main_thread()
    got: list[int] = []
    stop = threading.Event()

    def runners(signum: int, frame: FrameType | None) -> None:
        got.append(signum)
        stop.set()

    train = _trial.train

    def signalled(*args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(train).bind(*args, **kwargs)
        on_epoch = bound.arguments["on_epoch"]

        def epoch(n: int, *rest: Any) -> None:
            if n == 1 and not got:
                signal.raise_signal(signal.SIGINT)  # as a terminal's Ctrl-C: the main thread's handler runs
            on_epoch(n, *rest)

        bound.arguments["on_epoch"] = epoch
        return train(*bound.args, **bound.kwargs)

    monkeypatch.setattr(_trial, "train", signalled)
    previous = signal.signal(signal.SIGINT, runners)
    try:
        spec = parse_spec(tiny(search={"batch": 1,  # the lone loop, whose ``train`` this test holds
                                       "stages": [{"name": "baseline", "params": [], "trials": 1}]}))
        with pytest.raises(Cancelled):
            run_job(spec, storage=f"sqlite:///{tmp_path}/sig.db", prefix="sig", should_stop=stop.is_set)
        assert signal.getsignal(signal.SIGINT) is runners
    finally:
        signal.signal(signal.SIGINT, previous)
    assert got == [signal.SIGINT]
    [trial] = optuna.load_study(study_name=study_name("sig", "baseline"), storage=f"sqlite:///{tmp_path}/sig.db"
                                ).get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs.get("epochs") == 1
    assert trial.user_attrs["fail_reason"] == "cancelled in epoch 1"  # the runner's stop, not regtune's Ctrl-C
