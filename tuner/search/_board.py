"""A batch's epoch reports, written together, and the pruner's view of the study, read once per epoch.

Alone, a trial writes each epoch's report (one commit) and its pruner reads the
study's trials back (one query) every epoch. K trials trained as one batch would
do that K times per epoch boundary, which on a small model costs more than the
epoch itself. The board writes the reports of the boundaries of the last
``FLUSH_S`` in one transaction, with the attributes members joined with, and a
trial's own reports with its last attributes as it ends, before it is told. For
a percentile pruner (``median``) it answers each member from one snapshot of the
study's completed trials, read again when a trial of this process has completed
since (the board is told) and at least every ``REFRESH_S``, so trials other
workers complete are seen as well.

A percentile pruner reads only the completed trials and the member's own
reports, so its answers are the ones it would give alone at that moment. Other
pruners (``hyperband`` keeps its own bookkeeping in the storage) are asked
through the trial as usual, and their members write their reports one by one;
without a pruner (``none``) the reports are written together and nothing is asked.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import optuna
from optuna.pruners import NopPruner, PercentilePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner.storage import write_trials

__all__ = ["FLUSH_S", "REFRESH_S", "EpochBoard"]

REFRESH_S = 2.0
"""The oldest the snapshot of completed trials may be when a pruner reads it."""

FLUSH_S = 1.0
"""The longest a running trial's epoch reports wait to be written: what the dashboard may lag behind."""


class _Completed:
    """What a percentile pruner reads of a study: its completed trials and its direction."""

    def __init__(self, trials: list[FrozenTrial], direction: StudyDirection) -> None:
        self.trials, self.direction = trials, direction

    def get_trials(self, deepcopy: bool = False, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return [t for t in self.trials if states is None or t.state in states]


class EpochBoard:
    """Collects a batch's epoch reports, writes them in one go, and prunes from a snapshot. Thread-safe."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        # a percentile pruner (median) reads only what the snapshot holds; no pruner reads nothing
        self.batches = isinstance(study.pruner, PercentilePruner | NopPruner) and len(study.directions) == 1
        self._pending: list[tuple[int, int, float]] = []
        self._attrs: list[tuple[int, str, Any]] = []  # members' attributes at their start
        self._snapshot: _Completed | None = None
        self._read_at = 0.0
        self._written_at = time.monotonic()
        self._lock = threading.Lock()

    def report(self, trial: optuna.Trial, step: int, value: float) -> None:
        """Queue a report; ``flush`` writes it (before the trial is told how it ended)."""
        with self._lock:
            self._pending.append((trial._trial_id, step, value))

    def start(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        """Queue a joining member's first attributes; they are written with the next reports."""
        with self._lock:
            self._attrs.extend((trial._trial_id, key, value) for key, value in attrs.items())

    def should_prune(self, trial: optuna.Trial, values: dict[int, float]) -> bool:
        """The pruner's answer for ``trial``, whose reports so far are ``values``."""
        frozen = FrozenTrial(number=trial.number, state=TrialState.RUNNING, value=None, datetime_start=None,
                             datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                             intermediate_values=dict(values), trial_id=trial._trial_id)
        return bool(self.study.pruner.prune(self._completed(), frozen))  # type: ignore[arg-type]

    def _completed(self) -> _Completed:
        with self._lock:
            if self._snapshot is None or time.monotonic() - self._read_at >= REFRESH_S:
                trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                self._snapshot = _Completed(trials, self.study.direction)
                self._read_at = time.monotonic()
            return self._snapshot

    def completed(self, trial: optuna.Trial, values: dict[int, float], value: float) -> None:
        """A trial of this batch has completed, with epoch reports ``values`` and objective ``value``: the pruner
        counts it from the next question on, from what this runner knows, without reading the study again.
        Other runners' trials that completed meanwhile come with the next read, at most ``REFRESH_S`` on (a
        read cost 2 ms on PostgreSQL with ten trials running, and came after every completion)."""
        frozen = FrozenTrial(number=trial.number, state=TrialState.COMPLETE, value=value, datetime_start=None,
                             datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                             intermediate_values=dict(values), trial_id=trial._trial_id)
        with self._lock:
            if self._snapshot is not None:
                kept = [t for t in self._snapshot.trials if t._trial_id != frozen._trial_id]
                self._snapshot = _Completed([*kept, frozen], self._snapshot.direction)

    def flush(self) -> None:
        """Write every queued report in one transaction, once ``FLUSH_S`` have passed since the last write."""
        with self._lock:
            if not (self._pending or self._attrs) or time.monotonic() - self._written_at < FLUSH_S:
                return
            (pending, self._pending), (attrs, self._attrs) = (self._pending, []), (self._attrs, [])
            self._written_at = time.monotonic()
        write_trials(self.study._storage, intermediate=pending, user_attrs=attrs)

    def close(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        """A trial ends: write what is queued, its own reports among it, and its attributes in one transaction.

        Call it before the trial is told how it ended: a finished trial takes no more writes.
        """
        user_attrs, intermediate = self.take(trial, attrs)
        write_trials(self.study._storage, intermediate=intermediate, user_attrs=user_attrs)

    def close_crashed(self, trial: optuna.Trial) -> None:
        """A trial that crashed is about to be failed: write what is queued first (a finished trial takes no
        more writes), if the storage still takes it; the failure is recorded either way."""
        with contextlib.suppress(Exception):
            self.close(trial, {})

    def take(self, trial: optuna.Trial, attrs: dict[str, Any]
             ) -> tuple[list[tuple[int, str, Any]], list[tuple[int, int, float]]]:
        """A trial ends: what ``close`` would write, for the caller to write with its end (``finish_trial``).

        Returns:
            The queued attributes with ``attrs`` of ``trial``, and the queued reports (``write_trials``'
            ``user_attrs`` and ``intermediate``).
        """
        with self._lock:
            (pending, self._pending), (queued, self._attrs) = (self._pending, []), (self._attrs, [])
            self._written_at = time.monotonic()
        return queued + [(trial._trial_id, key, value) for key, value in attrs.items()], pending
