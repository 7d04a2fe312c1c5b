"""Batches of trials: ask K trials, train them as one batched model, record each.

The thread backend runs batches here (``run_batches``), refilling a batch's places
as its members end; a Ray worker runs its Tune trial's batch through the same
``train_members``.

Every trial is recorded exactly as ``run_trial`` records it (``TrialRecorder``):
the same user attributes, an intermediate value per epoch, pruning, FAIL with
the reason for a NaN in that member alone, a cancel at the next epoch boundary.
A member is told to the study as soon as it ends, while the rest of its batch
trains on, so the pruner and the sampler see it as early as they would alone.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence

import optuna

from tuner.devices import resolve_device
from tuner.knobs import Knobs
from tuner.search import EpochBoard, StageRun, TrialOutcome, TrialRecorder, fail_trial, pruner_startup
from tuner.spec import JobSpec
from tuner.storage import together
from tuner.train import (
    VMAPPED_KINDS,
    Dataset,
    EpochCallback,
    MemberOutcome,
    auto_batch,
    forward_work,
    is_streamed,
    n_weights,
    train_batched,
    train_vmapped,
    vmap_blocker,
)

__all__ = ["Asked", "available_cores", "batched_alone", "note_batching", "run_batches", "said_interrupted",
           "torch_threads", "train_members", "trials_per_batch", "worker_cores"]

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

    An MLP with batch norm, cross-validation (a trial is k fits), a GPU, half precision,
    data streamed from disk (``is_streamed``) and a plug-in or CNN that ``vmap`` cannot run
    (``vmap_blocker``) train one trial at a time
    (``auto`` gives 1; the spec rejects K > 1 where it can tell from the spec alone). ``auto`` batches only
    mlp and linear models, whose members train exactly as alone: through ``vmap`` a module's or CNN's
    dropout masks are not its lone run's, and its convolutions gain little (an explicit K batches them).
    Either backend batches: on Ray one Tune trial carries K Optuna trials.
    """
    vmapped = spec.model.kind in VMAPPED_KINDS  # the others: mlp and linear, stacked by hand
    if (spec.search.batch == 1 or (spec.model.batch_norm and not vmapped)
            or spec.model.kind not in ("mlp", "linear", *VMAPPED_KINDS)
            or data.folds or spec.training.precision != "fp32" or resolve_device(spec.training.device).type != "cpu"
            or is_streamed(data)):
        return 1
    if spec.search.batch == "auto":
        if vmapped:
            return 1
        return auto_batch(spec.model, data.n_features, data.n_outputs, stage_trials, worker_cores(spec))
    if vmapped and vmap_blocker(spec.model, data) is not None:
        return 1
    return int(spec.search.batch)


def batched_alone(spec: JobSpec, data: Dataset) -> bool:
    """Whether a stage whose trials train one at a time (K = 1) still trains them through the batched
    trainer, a batch of one: ``search.batch: auto`` on a model ``auto`` batches (mlp and linear; K > 1 for
    a larger stage). Its members train as the lone loop's would (to float tolerance) with regtune's own
    optimizer, not ``torch.optim``, whose first step imports ``torch._dynamo`` (about a second in a fresh
    process, such as a Ray worker's), and refill its place with the stage's next trial. ``search.batch: 1``
    keeps the lone loop.
    """
    return spec.search.batch == "auto" and trials_per_batch(spec, data, 2**20) > 1


def note_batching(run: StageRun, data: Dataset, per_batch: int) -> None:
    """Say in the stage's study (and, when it cannot, in the log) how its trials train, where batches were asked.

    Study attributes: ``batched`` (K > 1), ``batch_size`` (K), and ``batched_reason`` when the model
    cannot train batched (a plug-in ``vmap`` cannot run).
    """
    spec = run.spec
    if spec.search.batch == 1:
        return
    attrs: dict[str, bool | int | str] = {"batched": per_batch > 1, "batch_size": per_batch}
    why = (vmap_blocker(spec.model, data) if spec.model.kind in VMAPPED_KINDS and spec.search.batch != "auto"
           else None)
    if why is not None:
        attrs["batched_reason"] = why
        log.warning("stage %s: its trials train one at a time, not batched: %s", run.stage.name, why)
    have = run.study.user_attrs  # one read, not one per key
    with together(run.study._storage):  # and one write
        for key, value in attrs.items():
            if have.get(key) != value:
                run.study.set_user_attr(key, value)


def torch_threads(spec: JobSpec, data: Dataset) -> int:
    """Torch threads per worker: its share of the cores, as far as one step's work can use them.

    Workers × threads = the cores when a step is big enough (a batch of trials, a wide
    model); a tiny model's step keeps one thread, where a second would only wait on the first.
    """
    k = max(trials_per_batch(spec, data, stage.trials) for stage in spec.stages)
    per_example = (forward_work(spec.model, data) if k > 1 and spec.model.kind in VMAPPED_KINDS
                   else n_weights(spec.model, data.n_features, data.n_outputs))
    work = k * per_example * spec.training.batch_size
    return max(1, min(worker_cores(spec), work // MIN_WORK_PER_THREAD))


def said_interrupted(trial: optuna.Trial, outcome: TrialOutcome, interrupted: threading.Event | None
                     ) -> TrialOutcome:
    """A trial a Ctrl-C stopped, recorded as interrupted by it rather than cancelled; any other as it is."""
    if not (outcome.cancelled and interrupted is not None and interrupted.is_set()):
        return outcome
    reason = f"interrupted (Ctrl-C) after epoch {trial.user_attrs.get('epochs', 0)}"
    return fail_trial(trial.storage, trial._trial_id, reason, interrupted=True, cancelled=True)


def batch_room(run: StageRun, per_batch: int) -> Callable[[], int]:
    """How many members a worker's batch may hold now: ``per_batch``, or fewer early in a stage.

    Under a pruner that prunes against done trials (``median``), the stage's batches start with as
    many members as it needs done (``pruner_startup`` + 1, shared among the ``parallelism`` workers)
    and gain a place for each trial done, up to ``per_batch``: a batch of K asked at once could prune
    none of its members until several of them had finished, and the sampler would propose them all
    blind. Measured on bench/search_speed.py's job (digits, 40 trials, K 10): 943 epochs with 13
    pruned at once, 628 with 23 pruned ramped, in 0.75x the time.
    """
    startup = pruner_startup(run.spec.search.pruner) if len(run.spec.search.objectives) == 1 else None
    workers = run.spec.search.parallelism

    def room() -> int:
        if startup is None:
            return per_batch
        return max(1, min(per_batch, math.ceil((startup + 1 + run.done) / workers)))

    return room


def run_batches(run: StageRun, data: Dataset, per_batch: int, interrupted: threading.Event | None = None) -> None:
    """One worker: train the stage's trials ``per_batch`` at a time (``batch_room``), refilling places as
    members end.

    Args:
        interrupted: set on Ctrl-C; the members it stops are recorded as interrupted by it.
    """
    room = batch_room(run, per_batch)
    while True:
        asked = run.ask_up_to(room())
        if not asked:
            return
        if not _train_batch(run, data, asked, interrupted, per_batch, room):
            return


def _train_batch(run: StageRun, data: Dataset, first: list[Asked], interrupted: threading.Event | None = None,
                 size: int | None = None, room: Callable[[], int] | None = None) -> bool:
    """Train one batch of at most ``size`` members (``len(first)`` when None; ``room()`` now), refilled from
    the stage, and tell the study about each trial as it ends.

    False when recording failed (the stage was aborted).
    """
    ok = True

    def finish(index: int, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        nonlocal ok
        outcome = said_interrupted(trial, outcome, interrupted)
        try:
            run.finish(trial, outcome)
        except Exception as exc:  # the stage ends short of its budget and says why
            log.exception("could not record trial %d of stage %s", trial.number, run.stage.name)
            run.abort(f"recording trial {trial.number} failed: {exc!r}")
            ok = False

    def ask(free: int) -> list[Asked]:
        return run.ask_up_to(free) if ok else []

    train_members(first, spec=run.spec, data=data, stage=run.stage.name, on_told=finish, hold=True,
                  should_stop=run.should_stop, ask=ask, size=size, room=room, prunable=run.prunable)
    return ok


def train_members(first: Sequence[Asked], *, spec: JobSpec, data: Dataset, stage: str,
                  on_told: Callable[[int, optuna.Trial, TrialOutcome], None],
                  should_stop: Callable[[], bool] | None = None, ask: Callable[[int], Sequence[Asked]] | None = None,
                  size: int | None = None, room: Callable[[], int] | None = None, hold: bool = False,
                  prunable: bool = True) -> None:
    """Train ``first`` as one batched model, each trial recorded as ``run_trial`` records it; never raises.

    Whichever backend runs the batch (a thread here, a Ray worker) tells the study: ``on_told`` gets each
    member's outcome as soon as it ends, while the rest train on, exactly once per member. A
    batch that breaks fails every member not yet told, with the reason.

    Args:
        on_told: called with (index in the order members joined, trial, outcome); it must not raise.
        should_stop: True stops every member at its next poll, recorded FAIL (``interrupted``).
        ask: the trials to take the places members left, given how many are free (at most that many;
            a Ray worker asks its driver once per epoch boundary); without it the batch shrinks as members
            end. Called at every epoch boundary where members ended, after ``on_told`` has them, with 0
            where the batch has no room now (a Ray worker sends what it holds then). A module or cnn
            (through ``vmap``) is never refilled.
        size: the most members the batch holds (``len(first)`` when None); ``room()``, when given, how many
            it may hold now (places beyond it stay empty until it grows).
        hold: as ``run_trial``'s: a member's last rows go in the outcome, for ``StageRun.finish`` to write.
        prunable: as ``run_trial``'s: False where the pruner cannot prune any trial of the stage (it is not asked).
    """
    vmapped = spec.model.kind in VMAPPED_KINDS
    board = None if vmapped or not first else EpochBoard(first[0][0].study)
    asked: list[Asked] = []
    recorders: list[TrialRecorder] = []
    told: list[bool] = []

    def tell(index: int, ended: MemberOutcome) -> None:
        trial = asked[index][0]
        try:
            if index >= len(recorders):  # it broke before this trial's recorder was made
                raise ended if isinstance(ended, Exception) else RuntimeError("no recorder")
            outcome = recorders[index].conclude(ended)
        except Exception as exc:  # a bug in one trial must not leave it RUNNING
            log.error("trial %d of stage %s crashed", trial.number, stage, exc_info=exc)
            if board is not None:
                board.close_crashed(trial)
            outcome = fail_trial(trial.storage, trial._trial_id, repr(exc))
        told[index] = True
        on_told(index, trial, outcome)

    def join(new: Sequence[Asked]) -> list[tuple[Knobs, EpochCallback | None]]:
        """Make the recorders of newly asked trials; their (knobs, callback) join the batch."""
        start = len(asked)
        asked.extend(new)
        told.extend([False] * len(new))
        for t, c in new:
            recorders.append(TrialRecorder(t, c, spec=spec, data=data, stage=stage, should_stop=should_stop,
                                           board=board, hold=hold, prunable=prunable))
        return [(r.knobs, r.on_epoch) for r in recorders[start:]]

    def refill(free: int) -> list[tuple[Knobs, EpochCallback | None]]:
        if ask is None:
            return []
        if room is not None:  # the batch keeps (size - free) members past this boundary
            free = max(0, min(free, room() - ((size or len(first)) - free)))
        return join(list(ask(free))[:free])

    try:
        members = join(first)
        knobs, callbacks = [k for k, _ in members], [cb for _, cb in members]
        if board is None:  # a module or cnn through vmap: its batch is not refilled
            train_vmapped(data, spec.model, spec.training, knobs, spec.seed, callbacks, on_end=tell,
                          should_stop=should_stop, train_curve=spec.search.train_curve)
        else:
            train_batched(data, spec.model, spec.training, knobs, spec.seed, callbacks, on_end=tell,
                          should_stop=should_stop, refill=refill, after_epoch=board.flush, size=size,
                          train_curve=spec.search.train_curve)
    except Exception as exc:  # the batch itself broke: every member not yet told fails with the reason
        log.exception("a batch of %d trials of stage %s crashed", len(asked), stage)
        for index in range(len(asked)):
            if not told[index]:
                tell(index, exc)
