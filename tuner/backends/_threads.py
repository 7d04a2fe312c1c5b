"""The thread backend (named ``optuna``): a stage's trials trained in this process, side by side in threads.

With ``search.batch`` above 1 each thread trains its trials K at a time as one batched model (``_batches``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from functools import partial

from tuner.backends._batches import note_batching, run_batches, said_interrupted, trials_per_batch
from tuner.search import StageRun, run_trial
from tuner.train import Dataset

__all__ = ["run_stages", "run_threads"]

log = logging.getLogger(__name__)


def run_stages(stages: Iterator[StageRun], data: Dataset, storage_url: str) -> None:
    """The Optuna backend's executor: each stage in turn, on threads of its own (``run_threads``)."""
    for run in stages:
        run_threads(run, data, storage_url)


def run_threads(run: StageRun, data: Dataset, storage_url: str) -> None:
    """One stage on the Optuna backend: ``parallelism`` threads, each asking for a trial and training it.

    Ctrl-C in the calling thread stops the running trials at their next epoch boundary, records them
    FAIL (``interrupted``) and raises ``KeyboardInterrupt`` once every thread has ended.
    """
    interrupted = threading.Event()

    def worker() -> None:
        """Every trial it asks for ends finished or aborted, whatever raises: the thread never dies silently."""
        while True:
            try:
                asked = run.ask()
            except Exception as exc:  # the study could not make a trial (the database): say why, stop
                log.exception("could not start a trial of stage %s", run.stage.name)
                run.abort(f"starting a trial failed: {exc!r}", holding=False, cause=exc)
                return
            if asked is None:
                return
            trial, config = asked
            outcome = run_trial(trial, config, spec=run.spec, data=data, stage=run.stage.name,
                                should_stop=run.should_stop, prunable=run.prunable, hold=True)  # a crash: FAIL
            outcome = said_interrupted(trial, outcome, interrupted)  # say why it stopped: Ctrl-C, not a cancel
            try:
                run.finish(trial, outcome)
            except Exception as exc:  # the stage ends short of its budget and says why
                log.exception("could not record trial %d of stage %s", trial.number, run.stage.name)
                run.abort(f"recording trial {trial.number} failed: {exc!r}" + (
                    f" (it had failed: {outcome.reason})" if outcome.reason else ""), cause=exc)
                return

    per_batch = trials_per_batch(run.spec, data, run.target)
    note_batching(run, data, per_batch)
    work = partial(run_batches, run, data, per_batch, interrupted) if per_batch > 1 else worker
    asked_to_stop = run.should_stop
    run.should_stop = lambda: interrupted.is_set() or (asked_to_stop is not None and asked_to_stop())
    ended = [threading.Event() for _ in range(run.spec.search.parallelism)]

    def until_ended(done: threading.Event) -> None:
        try:
            work()
        finally:
            done.set()

    for done in ended:
        threading.Thread(target=until_ended, args=(done,), daemon=True).start()
    try:
        _wait_all(ended)
    except KeyboardInterrupt:
        # Ctrl-C: the running trials stop at their next epoch boundary and are recorded FAIL
        # (interrupted). Leaving them to die with the interpreter aborts the process (torch's threads).
        interrupted.set()
        log.warning("interrupted: stopping %d running trial(s) of stage %s at their next epoch",
                    run.in_flight, run.stage.name)
        while True:
            try:
                _wait_all(ended)
                break
            except KeyboardInterrupt:  # more Ctrl-Cs while they wind down: keep waiting
                continue
        raise
    finally:
        run.should_stop = asked_to_stop


def _wait_all(events: list[threading.Event]) -> None:
    """Wait for every event. Not ``Thread.join``: a Ctrl-C inside ``join`` can mark a thread that still
    runs as ended, so a second ``join`` would return at once (CPython 3.11, bpo-45274)."""
    for event in events:
        while not event.wait(1.0):
            pass

