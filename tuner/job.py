"""A whole job, in-process: load data, run the stages in order, write the report."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import FrozenTrial

from tuner.backends import executor_for, torch_threads
from tuner.devices import resolve_device
from tuner.errors import RegtuneError, SpecError
from tuner.limits import Limits, check_limits, check_work, estimate_work
from tuner.report import Report, build_report, render_html, render_markdown, stage_progress
from tuner.search import (
    StageOutcome,
    StageRun,
    budget_used,
    close_stage,
    delete_studies,
    fail_interrupted,
    open_stage,
    run_path,
)
from tuner.spec import JobSpec, check_task
from tuner.storage import open_storage
from tuner.train import Dataset, check_model, load_dataset

__all__ = ["Progress", "check_against_data", "run_job", "study_name", "write_report"]

log = logging.getLogger(__name__)


class Progress(Protocol):
    """What a caller sees while a job runs (the CLI draws bars from it)."""

    def stage_started(self, name: str, study_name: str, total: int, done: int) -> None: ...
    def trial_finished(self, stage: str, trial: FrozenTrial) -> None: ...
    def stage_finished(self, outcome: StageOutcome) -> None: ...


def study_name(prefix: str, stage: str) -> str:
    """``<prefix>/<stage>``; the prefix is the job name (CLI) or ``<name>-<job id>`` (service)."""
    return f"{prefix}/{stage}"


def check_against_data(spec: JobSpec, data: Dataset, limits: Limits | None = None) -> None:
    """The rules that need the data itself (a CSV's task and shape are known only once it is read).

    Raises:
        SpecError: a knob or objective that the task cannot use, or work over ``limits``.
    """
    if limits is not None and spec.dataset.known_shape is None:
        work = estimate_work(spec, rows=len(data.train) + len(data.val) + (len(data.test) if data.test else 0),
                             features=data.n_features, outputs=data.n_outputs, train_rows=len(data.train))
        if issues := check_work(spec, work, limits):
            raise SpecError(issues)
    if spec.task is None and (issues := check_task(spec, data.task, "the dataset's target is continuous "
                                                   "(a regression)")):
        raise SpecError(issues)


def run_job(spec: JobSpec, *, storage: str, prefix: str | None = None, out_dir: Path | None = None,
            progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
            limits: Limits | None = None, fresh: bool = False, model_dir: Path | None = None,
            trial_attrs: dict[str, Any] | None = None) -> Report:
    """Run every stage of ``spec`` against ``storage`` (resuming what is there) and build the report.

    Args:
        storage: a database URL; the stages' studies are named ``<prefix>/<stage>``.
        prefix: the study-name prefix; defaults to the job name.
        out_dir: where ``report.json`` and ``report.md`` go, if anywhere; the chosen model goes there too.
        model_dir: where ``model.safetensors`` and ``model.json`` go (default: ``out_dir``).
        should_stop: polled at epoch boundaries; when it answers True the job stops (``Cancelled``).
        limits: what the job may cost; default ``Limits.from_env()`` (``REGTUNE_MAX_*``).
        fresh: delete the job's studies (``<prefix>/*``) first, instead of resuming them.
        trial_attrs: user attributes set on every trial as it starts (the service: its ``runner``).

    Returns:
        The report (``report.model_dump_json()`` is what ``report.json`` holds).

    Raises:
        SpecError: a rule that only the data could check, a limit the job is over, or studies of a
            different spec to resume.
        Cancelled: ``should_stop`` answered True.
        RegtuneError: a stage could not complete its budget.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prefix = prefix or spec.name
    rdb = open_storage(storage)
    limits = limits or Limits.from_env()
    if issues := check_limits(spec, limits):
        raise SpecError(issues)
    if fresh and (deleted := delete_studies(rdb, prefix)):
        log.warning("--fresh: deleted %d earlier stud%s of %s", len(deleted), "y" if len(deleted) == 1 else "ies",
                    prefix)
    data = load_dataset(spec.dataset, spec.seed, max_cells=limits.max_cells)
    check_against_data(spec, data, limits)
    torch.set_num_threads(torch_threads(spec, data))  # parallel workers × threads = the cores, where work allows
    if spec.model.kind in ("module", "cnn"):  # build the model once and run one batch before any stage
        layers = check_model(spec, data)
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"dropout_layers": layers})})
    search_data = data.without_test()  # the search never sees the test split
    executor = executor_for(spec.search.backend)
    device = str(resolve_device(spec.training.device))
    outcomes: list[StageOutcome] = []
    stages = _stage_runs(spec, rdb, prefix, outcomes, device=device, progress=progress, should_stop=should_stop,
                         trial_attrs=trial_attrs or {}, path=partial(run_path, data=search_data, storage_url=storage))
    after_job = executor(stages, search_data, storage)
    try:
        for run in stages:  # closes the stage the backend ran last, if it left it open (raising what that raises)
            raise RegtuneError(f"the {spec.search.backend!r} backend ended before stage {run.stage.name!r} ran")
        report = build_report(spec, data, outcomes, should_stop=should_stop,
                              model_dir=model_dir if model_dir is not None else out_dir)
        report.device = device
        if out_dir is not None:
            write_report(report, out_dir, [t for o in outcomes for t in o.study.get_trials(deepcopy=False)])
    finally:
        if after_job is not None:  # the backend's work for after the job (``StageExecutor``)
            after_job()
    return report


def _stage_runs(spec: JobSpec, rdb: optuna.storages.BaseStorage, prefix: str, outcomes: list[StageOutcome], *,
                device: str, progress: Progress | None, should_stop: Callable[[], bool] | None,
                trial_attrs: dict[str, Any], path: Callable[[StageRun], None]) -> Iterator[StageRun]:
    """The job's stages in order, each opened as the one before it is closed: what the backend runs.

    Yields each stage that needs trials from the backend. A stage whose budget is met already (a
    resumed job) and the L1 path (run here, by ``path``) are not yielded. Taking the next stage closes
    the one before (``close_stage``, which raises ``Cancelled`` or ``RegtuneError``); its outcome is
    appended to ``outcomes``, and the values it fixes hold for the stages after it.
    """
    fixed: dict[str, float] = {}
    fixed_by: dict[str, str] = {}
    for index, stage in enumerate(spec.stages):
        name = study_name(prefix, stage.name)
        study = open_stage(spec, index, storage=rdb, study_name=name, earlier=outcomes, fixed=fixed,
                           fixed_by=fixed_by, job=prefix)
        study.set_user_attr("device", device)  # each study records the device that ran it
        if (n := fail_interrupted(study, rdb)):
            log.warning("%s: %d trial(s) left running by an earlier process marked failed", name, n)
        done = budget_used(study)
        if progress:
            progress.stage_started(stage.name, name, stage.trials, done)
        run = StageRun(spec=spec, stage=stage, study=study, fixed=dict(fixed), target=stage.trials, done=done,
                       should_stop=should_stop, trial_attrs=dict(trial_attrs),
                       on_trial=partial(progress.trial_finished, stage.name) if progress else None)
        if done < stage.trials:
            if stage.path:
                path(run)
            else:
                yield run
        outcome = close_stage(run, outcomes, name)
        for key, value in outcome.fixed.items():
            fixed[key] = value
            fixed_by[key] = stage.name
        outcomes.append(outcome)
        if progress:
            progress.stage_finished(outcome)


def write_report(report: Report, out_dir: Path, trials: list[FrozenTrial]) -> None:
    """Write ``report.json``, ``report.md``, the job page ``report.html`` and ``plots/<name>.png``.

    Args:
        trials: every trial of the job's stage studies (the plots are drawn from them).
    """
    from tuner.plots import render_plots  # matplotlib: imported only where plots are drawn

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    plots = render_plots(report, trials)
    (out_dir / "plots").mkdir(exist_ok=True)
    for name, png in plots.items():
        (out_dir / "plots" / f"{name}.png").write_bytes(png)
    progress = stage_progress([(s.name, s.study_name, s.budget) for s in report.stages], trials)
    (out_dir / "report.html").write_text(render_html(report, plots, title=report.job, progress=progress),
                                        encoding="utf-8")
