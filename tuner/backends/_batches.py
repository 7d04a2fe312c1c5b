"""Batches of trials: ask K trials, train them as one batched model, record each.

The thread backend runs batches here (``run_batches``); a Ray worker runs its
Tune trial's batch through the same ``train_members``.

Every trial is recorded exactly as ``run_trial`` records it (``TrialRecorder``):
the same user attributes, an intermediate value per epoch, pruning, FAIL with
the reason for a NaN in that member alone, a cancel at the next epoch boundary.
A member is told to the study as soon as it ends, while the rest of its batch
trains on, so the pruner and the sampler see it as early as they would alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import optuna

from tuner.devices import resolve_device
from tuner.search import StageRun, TrialOutcome, TrialRecorder, fail_trial
from tuner.spec import JobSpec
from tuner.train import Dataset, MemberOutcome, auto_batch, is_streamed, n_weights, train_batched

__all__ = ["Asked", "available_cores", "run_batches", "torch_threads", "train_members", "trials_per_batch",
           "worker_cores"]

log = logging.getLogger(__name__)

Asked = tuple[optuna.Trial, dict[str, float]]
"""A trial the ``StageRun`` handed out, and its full configuration."""

MIN_WORK_PER_THREAD = 2**22
"""Multiply-adds per training step below which a second thread costs more in synchronization than it saves."""


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_cores(spec: JobSpec) -> int:
    """The cores each of the ``parallelism`` workers may use."""
    return max(1, available_cores() // spec.search.parallelism)


def trials_per_batch(spec: JobSpec, data: Dataset, stage_trials: int) -> int:
    """K for a stage: ``search.batch``, with ``auto`` sized from the model and a worker's cores.

    Batch norm, models other than mlp and linear, cross-validation (a trial is k fits), a GPU, half
    precision and data streamed from disk (``is_streamed``) train one trial at a time (``auto`` gives 1;
    the spec rejects K > 1 where it can tell from the spec alone). Either backend batches: on Ray one
    Tune trial carries K Optuna trials.
    """
    if (spec.model.batch_norm or spec.model.kind not in ("mlp", "linear") or data.folds
            or spec.training.precision != "fp32" or resolve_device(spec.training.device).type != "cpu"
            or is_streamed(data)):
        return 1
    if spec.search.batch == "auto":
        return auto_batch(spec.model, data.n_features, data.n_outputs, stage_trials, worker_cores(spec))
    return int(spec.search.batch)


def torch_threads(spec: JobSpec, data: Dataset) -> int:
    """Torch threads per worker: its share of the cores, as far as one step's work can use them.

    Workers × threads = the cores when a step is big enough (a batch of trials, a wide
    model); a tiny model's step keeps one thread, where a second would only wait on the first.
    """
    k = max(trials_per_batch(spec, data, stage.trials) for stage in spec.stages)
    work = k * n_weights(spec.model, data.n_features, data.n_outputs) * spec.training.batch_size
    return max(1, min(worker_cores(spec), work // MIN_WORK_PER_THREAD))


def run_batches(run: StageRun, data: Dataset, per_batch: int) -> None:
    """One worker: ask up to ``per_batch`` trials, train them together, repeat until the stage is done."""
    while True:
        asked: list[Asked] = []
        while len(asked) < per_batch and (one := run.ask()) is not None:
            asked.append(one)
        if not asked:
            return
        if not _train_batch(run, data, asked):
            return


def _train_batch(run: StageRun, data: Dataset, asked: list[Asked]) -> bool:
    """Train one batch and tell the study about each trial as it ends. False when recording failed."""
    ok = True

    def finish(index: int, outcome: TrialOutcome) -> None:
        nonlocal ok
        trial = asked[index][0]
        try:
            run.finish(trial, outcome)
        except Exception as exc:  # the stage ends short of its budget and says why
            log.exception("could not record trial %d of stage %s", trial.number, run.stage.name)
            run.abort(f"recording trial {trial.number} failed: {exc!r}")
            ok = False

    train_members(asked, spec=run.spec, data=data, stage=run.stage.name, on_told=finish,
                  should_stop=run.should_stop)
    return ok


def train_members(asked: Sequence[Asked], *, spec: JobSpec, data: Dataset, stage: str,
                  on_told: Callable[[int, TrialOutcome], None],
                  should_stop: Callable[[], bool] | None = None) -> None:
    """Train ``asked`` as one batched model, each trial recorded as ``run_trial`` records it; never raises.

    Whichever backend runs the batch (a thread here, a Ray worker) tells the study: ``on_told`` gets each
    member's outcome as soon as it ends, while the rest train on, exactly once per member. A batch that
    breaks fails every member not yet told, with the reason.

    Args:
        on_told: called with (index in ``asked``, outcome); it must not raise.
        should_stop: True stops every member at its next poll, recorded FAIL (``interrupted``).
    """
    recorders: list[TrialRecorder] = []
    told = [False] * len(asked)

    def tell(index: int, ended: MemberOutcome) -> None:
        trial = asked[index][0]
        try:
            if index >= len(recorders):  # it broke before this trial's recorder was made
                raise ended if isinstance(ended, Exception) else RuntimeError("no recorder")
            outcome = recorders[index].conclude(ended)
        except Exception as exc:  # a bug in one trial must not leave it RUNNING
            log.error("trial %d of stage %s crashed", trial.number, stage, exc_info=exc)
            outcome = fail_trial(trial.storage, trial._trial_id, repr(exc))
        told[index] = True
        on_told(index, outcome)

    try:
        for t, c in asked:
            recorders.append(TrialRecorder(t, c, spec=spec, data=data, stage=stage, should_stop=should_stop))
        _train(data, spec, recorders, tell, should_stop)
    except Exception as exc:  # the batch itself broke: every member not yet told fails with the reason
        log.exception("a batch of %d trials of stage %s crashed", len(asked), stage)
        for index in range(len(asked)):
            if not told[index]:
                tell(index, exc)


def _train(data: Dataset, spec: JobSpec, recorders: list[TrialRecorder],
           on_end: Callable[[int, MemberOutcome], None], should_stop: Callable[[], bool] | None) -> None:
    """The one call into the batched loop: the recorders' knobs and epoch callbacks, the job's seed."""
    train_batched(data, spec.model, spec.training, [r.knobs for r in recorders], spec.seed,
                  [r.on_epoch for r in recorders], on_end=on_end, should_stop=should_stop)
