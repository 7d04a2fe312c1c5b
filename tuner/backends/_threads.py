"""The thread backend (named ``optuna``): a stage's trials trained in this process, side by side in threads.

With ``search.batch`` above 1 each thread trains its trials K at a time as one batched model (``_batches``).
"""

from __future__ import annotations

import logging
import threading
from functools import partial

from optuna.trial import TrialState

from tuner.backends._batches import run_batches, trials_per_batch
from tuner.search import StageRun, TrialOutcome, run_trial
from tuner.train import Dataset

__all__ = ["run_threads"]

log = logging.getLogger(__name__)


def run_threads(run: StageRun, data: Dataset, storage_url: str) -> None:
    """The Optuna backend: ``parallelism`` threads, each asking for a trial and training it."""

    def worker() -> None:
        while (asked := run.ask()) is not None:
            trial, config = asked
            try:
                outcome = run_trial(trial, config, spec=run.spec, data=data, stage=run.stage.name,
                                    should_stop=run.should_stop)
            except Exception as exc:  # a bug in one trial must not leave it RUNNING
                log.exception("trial %d of stage %s crashed", trial.number, run.stage.name)
                trial.set_user_attr("fail_reason", repr(exc))
                outcome = TrialOutcome(TrialState.FAIL, reason=repr(exc))
            try:
                run.finish(trial, outcome)
            except Exception as exc:  # the stage ends short of its budget and says why
                log.exception("could not record trial %d of stage %s", trial.number, run.stage.name)
                run.abort(f"recording trial {trial.number} failed: {exc!r}")
                return

    per_batch = trials_per_batch(run.spec, data, run.target)
    target = partial(run_batches, run, data, per_batch) if per_batch > 1 else worker
    threads = [threading.Thread(target=target, daemon=True) for _ in range(run.spec.search.parallelism)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
