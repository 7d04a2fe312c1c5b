"""The thread backend (named ``optuna``): a stage's trials trained in this process, side by side in threads."""

from __future__ import annotations

import logging
import threading

from optuna.trial import TrialState

from tuner.search import StageRun, TrialOutcome, run_trial
from tuner.train import Dataset

__all__ = ["run_threads"]

log = logging.getLogger(__name__)


def run_threads(run: StageRun, data: Dataset, storage_url: str) -> None:
    """The Optuna backend: ``parallelism`` threads, each asking for a trial and training it."""

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
            try:
                outcome = run_trial(trial, config, spec=run.spec, data=data, stage=run.stage.name,
                                    should_stop=run.should_stop)
            except Exception as exc:  # a bug in one trial must not leave it RUNNING
                log.exception("trial %d of stage %s crashed", trial.number, run.stage.name)
                outcome = TrialOutcome(TrialState.FAIL, reason=repr(exc))
                try:
                    trial.set_user_attr("fail_reason", repr(exc))
                except Exception:  # the trial may be finished already (taken back by a reclaimer)
                    log.warning("trial %d of stage %s: its failure could not be recorded", trial.number,
                                run.stage.name, exc_info=True)
            try:
                run.finish(trial, outcome)
            except Exception as exc:  # the stage ends short of its budget and says why
                log.exception("could not record trial %d of stage %s", trial.number, run.stage.name)
                run.abort(f"recording trial {trial.number} failed: {exc!r}" + (
                    f" (it had failed: {outcome.reason})" if outcome.reason else ""), cause=exc)
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(run.spec.search.parallelism)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
