"""The thread backend (named ``optuna``): a stage's trials trained in this process, side by side in
``parallelism`` workers: the calling thread, and threads beside it when there are more.

With ``search.batch`` above 1 each worker trains its trials K at a time as one batched model (``_batches``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from types import FrameType

from tuner.backends._batches import batched_alone, note_batching, run_batches, said_interrupted, trials_per_batch
from tuner.search import StageRun, run_trial
from tuner.train import Dataset

__all__ = ["run_stages", "run_threads"]

log = logging.getLogger(__name__)


def run_stages(stages: Iterator[StageRun], data: Dataset, storage_url: str) -> None:
    """The Optuna backend's executor: each stage in turn, on ``parallelism`` workers (``run_threads``)."""
    for run in stages:
        run_threads(run, data, storage_url)


def run_threads(run: StageRun, data: Dataset, storage_url: str) -> None:
    """One stage on the Optuna backend: ``parallelism`` workers, each asking for a trial and training it.

    The calling thread is the first worker; the others are threads of their own. Torch's OpenMP
    threads belong to the thread that starts them: a worker thread beside a calling thread that has
    already run torch in parallel (loading the data, a script's own training) starts a second set,
    and when the two sets outnumber the cores, GNU OpenMP stops spinning between parallel regions and
    sleeps instead. Measured on bench/search_speed.py's job: a batch of 4 trained at 25 ms per member
    and epoch in a thread against 17 in the calling thread; the search ran at 2.7 trials/s against 3.5.

    Ctrl-C (SIGINT, in the main thread) stops the running trials at their next epoch boundary, records
    them FAIL (``interrupted``) and raises ``KeyboardInterrupt`` once every worker has ended.
    """
    interrupted = threading.Event()

    def worker() -> None:
        """Every trial it asks for ends finished or aborted, whatever raises."""
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
    batched = per_batch > 1 or batched_alone(run.spec, data)
    work = partial(run_batches, run, data, per_batch, interrupted) if batched else worker
    asked_to_stop = run.should_stop
    run.should_stop = lambda: interrupted.is_set() or (asked_to_stop is not None and asked_to_stop())
    ended = [threading.Event() for _ in range(run.spec.search.parallelism)]

    def until_ended(done: threading.Event) -> None:
        try:
            work()
        except Exception:  # a bug: this worker stops, as a thread would die; the stage ends short and says so
            log.exception("a worker of stage %s crashed", run.stage.name)
        finally:
            done.set()

    def on_ctrl_c() -> None:
        if not interrupted.is_set():
            interrupted.set()
            log.warning("interrupted: stopping %d running trial(s) of stage %s at their next epoch",
                        run.in_flight, run.stage.name)

    try:
        with _ctrl_c_calls(on_ctrl_c):
            for done in ended[1:]:
                threading.Thread(target=until_ended, args=(done,), daemon=True).start()
            until_ended(ended[0])
            _wait_all(ended)
    finally:
        run.should_stop = asked_to_stop
    if interrupted.is_set():
        raise KeyboardInterrupt


@contextmanager
def _ctrl_c_calls(on_ctrl_c: Callable[[], None]) -> Iterator[None]:
    """While inside, Ctrl-C calls ``on_ctrl_c`` instead of raising ``KeyboardInterrupt`` wherever the
    main thread happens to be (in the middle of a trial, whose threads would abort the interpreter).

    A handler installed before (a runner's) still runs first; a ``KeyboardInterrupt`` it raises calls
    ``on_ctrl_c`` too. Outside the main thread no signal arrives, and nothing changes; nor where SIGINT
    is ignored or left to the system.
    """
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if not callable(previous):
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        try:
            if previous is not signal.default_int_handler:
                previous(signum, frame)
                return
        except KeyboardInterrupt:
            pass
        on_ctrl_c()

    signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_all(events: list[threading.Event]) -> None:
    """Wait for every event. Not ``Thread.join``: a Ctrl-C inside ``join`` can mark a thread that still
    runs as ended, so a second ``join`` would return at once (CPython 3.11, bpo-45274)."""
    for event in events:
        while not event.wait(1.0):
            pass

