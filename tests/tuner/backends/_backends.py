"""Helpers of the backend tests: a stage's trials, how many ran at once, epochs that last a while, the
processes of a local Ray cluster."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pytest

from tuner import JobSpec, open_storage, parse_spec, run_job

if TYPE_CHECKING:
    from ray.tune import ResultGrid

Tiny = Callable[..., dict[str, Any]]

RECORDED = ("stage", "config", "train_loss", "val_loss", "gap", "train_acc", "val_acc", "sparsity",
            "features_kept", "epochs", "seconds", "val_curve")
"""What every completed trial records, whichever backend ran it (DESIGN.md), beside its configuration and val
curve; ``train_curve`` too with ``search.train_curve``."""


def trials_of(url: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage=open_storage(url)).get_trials(deepcopy=False)


def most_at_once(trials: list[optuna.trial.FrozenTrial]) -> int:
    """The most trials that were running at the same moment (from their start and end times)."""
    events = sorted([(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def epochs_lasting(tiny: Tiny, seconds: float, tmp_path: Path) -> int:
    """Epochs of the tiny spec that train for about ``seconds`` here (measured): long on any machine."""
    url = f"sqlite:///{tmp_path}/timing.db"
    run_job(parse_spec(tiny(training={"epochs": 30}, search={"stages": [{"name": "baseline", "params": [],
                                                                          "trials": 1}]},
                            report={"top_k": 1, "seeds": 0})), storage=url, prefix="timing")
    [trial] = trials_of(url, "timing/baseline")
    per_epoch = trial.user_attrs["seconds"] / trial.user_attrs["epochs"]
    return max(150, math.ceil(seconds / per_epoch))


def descendants() -> list[tuple[int, str]]:
    """(pid, process title) of every process below this one, as a local Ray cluster's processes are."""
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(entry.name)
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            titles[pid] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    found: list[int] = []
    frontier = [os.getpid()]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return [(pid, titles.get(pid, "")) for pid in found]


def ray_spec(tiny: Tiny, *, epochs: int, parallelism: int, stages: list[dict[str, Any]], batch: int = 1) -> JobSpec:
    """The tiny spec on the Ray backend, with the median pruner and these stages."""
    return parse_spec(tiny(training={"epochs": epochs},
                           search={"backend": "ray", "pruner": "median", "parallelism": parallelism,
                                   "stages": stages, "batch": batch},
                           report={"top_k": 1, "seeds": 1}))


def tune_results(monkeypatch: pytest.MonkeyPatch) -> list[ResultGrid]:
    """The result grid of every Tune run made from here on (``Tuner.fit``'s), in order."""
    from ray import tune

    grids: list[ResultGrid] = []
    fit = tune.Tuner.fit

    def kept(self: tune.Tuner) -> ResultGrid:
        grids.append(fit(self))
        return grids[-1]

    monkeypatch.setattr(tune.Tuner, "fit", kept)
    return grids
