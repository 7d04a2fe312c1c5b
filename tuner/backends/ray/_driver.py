"""The Ray Tune backend: the trials of a job's stages run as Ray Tune trials, all in one Tune run, each
carrying one Optuna trial or, with ``search.batch``, a batch of K trained as one batched model.

The driver keeps the Optuna side, as the Optuna backend does: a Tune searcher
asks the current stage's ``StageRun`` for every trial (the sampler suggests in the driver) and
tells the study how each one ended (``_searcher``). A Ray worker rebuilds the
trials from the shared storage and trains them as the thread backend does
(``run_trial``, or ``train_members`` for a batch), so their user attributes and
intermediate values are written exactly as with the Optuna backend; it reports
each member's outcome to Tune as it ends (``_trainable``). A batch asks the
driver for the trials that take its free places (``StageSearcher._refill``,
answered through a ``Mailbox`` actor). Once the job is done, the local cluster
starts the workers the next job's actors take (``_workers``).

The storage must be one the workers can open: a SQLite file on one machine
(its path made absolute, since Tune runs each trial in a directory of its own),
PostgreSQL across machines. Ray's own results go to a temporary directory: the
trials live in Optuna's storage only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import ray
from ray import tune
from ray.tune.experiment import Trial as TuneTrial
from sqlalchemy.engine import make_url

from tuner.backends._batches import torch_threads, trials_per_batch
from tuner.backends.ray._searcher import StageSearcher, TrialRegistry
from tuner.backends.ray._trainable import train_trial
from tuner.backends.ray._workers import restock
from tuner.devices import resolve_device
from tuner.errors import RegtuneError
from tuner.search import StageRun
from tuner.train import VMAPPED_KINDS, Dataset

__all__ = ["ensure_ray", "run_ray", "worker_storage_url"]

log = logging.getLogger(__name__)

_TUNE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # the new output engine prints the experiment's header even with verbose=0
    "TUNE_DISABLE_SIGINT_HANDLER": "1",  # Ctrl+C raises KeyboardInterrupt, as with the Optuna backend
    # Tune's CSV, JSON and TensorBoard loggers would write every result (each member's outcome, each request
    # for members, each heartbeat) to the run's directory, which is thrown away: the trials live in Optuna's
    # storage. They ran in the driver's loop, between a worker's result and Tune's answer to it.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}
"""Settings Tune reads only from the environment (a value already set there wins)."""


def run_ray(stages: Iterator[StageRun], data: Dataset, storage_url: str) -> Callable[[], object] | None:
    """The Ray backend: run the job's stages in one Ray Tune run, at most ``parallelism`` trials at once.

    One Tune run for the whole job, not one per stage: a Tune run takes about a second to start, and
    a worker's first trial imports torch and regtune (another second or more); within one run, Tune
    hands the next stage's first trial to the worker the last stage's trial ran on.

    Args:
        stages: the job's stages; the searcher takes the next once the current one has no trial left to
            hand out or running.
        data: the search data (no test split), shipped once to the object store.
        storage_url: the Optuna storage the workers open to record their trials.

    Returns:
        On the local cluster ``ensure_ray`` started, what starts the workers the next job's actors take
        (``restock``), for the caller to call once the job's report is built. Started now, their imports would
        compete with the report's training: on 2 cores, the work after a search (the report and its plots) took
        11.9 s alone and 17.8 s beside two restocked workers starting (medians of 4). A run that raises
        restocks before it raises: no report follows. None on another cluster.

    Raises:
        RegtuneError: the storage is one Ray workers cannot reach (an in-memory SQLite database).
        Exception: what closing a stage raised (``Cancelled``, ``RegtuneError``), once the run has ended.
    """
    url = worker_storage_url(storage_url)
    run = next(stages, None)
    if run is None:
        return None
    spec = run.spec
    parallelism = spec.search.parallelism
    ensure_ray()
    if url.startswith("sqlite") and len(ray.nodes()) > 1:
        log.warning("the Ray cluster has %d nodes but the storage is a SQLite file, which only workers on "
                    "this machine can open; use PostgreSQL", len(ray.nodes()))
    for key, value in _TUNE_ENV.items():
        os.environ.setdefault(key, value)
    # a batch of mlp or linear members is refilled from the driver as they end (one through vmap is not)
    refillable = spec.model.kind not in VMAPPED_KINDS and any(
        trials_per_batch(spec, data, stage.trials) > 1 for stage in spec.stages)
    searcher = StageSearcher(itertools.chain([run], stages), data, refillable=refillable)
    trainable = tune.with_parameters(train_trial, spec=spec.model_dump(mode="json"), storage_url=url, data=data)
    share: dict[str, float] = {"cpu": _cpus_per_trial(parallelism, torch_threads(spec, data))}
    if resolve_device(spec.training.device).type == "cuda":  # trials running side by side share the GPU
        share["gpu"] = 1.0 / parallelism
    trainable = tune.with_resources(trainable, share)
    # the workers this job's actors take: its trainables (Tune reuses them from stage to stage) and the Mailbox
    next_job = partial(restock, min(parallelism, _cores()) + int(refillable)) if _on_started_cluster() else None
    try:
        with tempfile.TemporaryDirectory(prefix="regtune-ray-", ignore_cleanup_errors=True) as results:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=parallelism,
                                            reuse_actors=True, trial_name_creator=_trial_name,
                                            trial_dirname_creator=_trial_name),
                run_config=tune.RunConfig(name="job", storage_path=results, stop=searcher.stopper, verbose=0,
                                          callbacks=[TrialRegistry(searcher)]),
            )
            try:
                with _no_missing_results_warning(), _trainables_on_started_workers():
                    tuner.fit()
            finally:
                searcher.interrupt_unfinished()
                searcher.close_mailbox()
        searcher.end()
    except BaseException:
        if next_job is not None:  # the job ends here, with no report to build
            next_job()
        raise
    return next_job


class _MissingResults(logging.Filter):
    """Drops Tune's warning that a trial's ``result.json`` and ``progress.csv`` are missing: regtune turns
    Tune's result loggers off (``_TUNE_ENV``), so no trial has them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to fetch metrics for")


@contextlib.contextmanager
def _no_missing_results_warning() -> Iterator[None]:
    tune_log, dropped = logging.getLogger("ray.tune.analysis.experiment_analysis"), _MissingResults()
    tune_log.addFilter(dropped)
    try:
        yield
    finally:
        tune_log.removeFilter(dropped)


@contextlib.contextmanager
def _trainables_on_started_workers() -> Iterator[None]:
    """Tune's trainable actors without the runtime environment Tune gives them by default.

    Tune starts each trainable actor with ``runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}}``
    (a PyTorch Lightning setting; ``ray.tune.execution.class_cache``), and an actor with a runtime
    environment of its own gets a worker process started for it: measured on bench/search_speed.py's
    job, its first trial began 3 s after the Tune run, the process's start and its imports of torch
    and regtune included. Without it the actor takes one of the workers a local cluster started
    with it, which have imported regtune already (``ensure_ray``'s ``preload_python_modules``). An
    environment variable that Tune passes on from the driver's (AWS keys, Ray Train's settings) still
    gives the actor its own worker, as before. (Two jobs fitting at once in one process may leave the
    variable off when both have ended: regtune's trainables never read it.)
    """
    try:
        from ray.tune.execution import class_cache
        defaults: dict[str, str] = class_cache.DEFAULT_ENV_VARS
    except (ImportError, AttributeError):  # another Ray: its defaults stay
        yield
        return
    kept = dict(defaults)
    defaults.pop("PL_DISABLE_FORK", None)
    try:
        yield
    finally:
        defaults.clear()
        defaults.update(kept)


WORKER_MODULES = ["tuner.backends.ray._preload"]
"""What the workers of a local cluster import as they start (``preload_python_modules``): the trainable,
torch and regtune with it, and what opening the storage imports, so that a trial does not wait for them
(about 1.4 s of imports, and 0.3 s)."""

WARM_WORKERS = 2
"""The idle workers a local cluster keeps (``num_workers_soft_limit``), started with it: one for the first
Tune trial, one for the ``Mailbox``. Ray would otherwise start one per core, and each holds about 250 MB
of its own once torch is imported. After each job, ``restock`` starts those the next job takes."""


_init_lock = threading.Lock()
_started: set[str] = set()
"""The GCS addresses of the local clusters ``ensure_ray`` started in this process."""


def ensure_ray() -> None:
    """Connect to the cluster at ``RAY_ADDRESS``, or start a local one with this machine's cores.

    Does nothing when Ray is already initialized in this process (by the caller or an earlier stage).
    Without ``RAY_ADDRESS`` a new local cluster starts even when ``ray start`` left one running here
    (``RAY_ADDRESS=auto`` connects to that one): a stale record of one cannot break a job.

    Raises:
        RegtuneError: the cluster at ``RAY_ADDRESS`` could not be reached.
    """
    with _init_lock:
        if ray.is_initialized():
            return
        address = os.environ.get("RAY_ADDRESS") or None
        if address is None or address == "local":
            # workers at the driver's priority: Ray starts them at niceness 15, where any other process on the
            # machine (the API, the database, another job) starves the trials (a loaded run crawled 10x slower)
            # its workers start with regtune imported (``WORKER_MODULES``), and ``WARM_WORKERS`` wait for the
            # first trials (``_trainables_on_started_workers``)
            ray.init(address="local", num_cpus=_cores(), include_dashboard=False, logging_level=logging.WARNING,
                     _system_config={"worker_niceness": 0, "preload_python_modules": WORKER_MODULES,
                                     "num_workers_soft_limit": WARM_WORKERS})
            _started.add(ray.get_runtime_context().gcs_address)
        else:
            try:
                ray.init(address=address, logging_level=logging.WARNING)
            except ConnectionError as exc:
                raise RegtuneError(
                    f"could not connect to the Ray cluster at RAY_ADDRESS={address!r}: {exc}. A cluster with "
                    "token authentication also needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or "
                    "~/.ray/auth_token)") from exc
        log.info("Ray cluster: %s", ray.cluster_resources())


def _on_started_cluster() -> bool:
    """Whether this process is connected to a local cluster ``ensure_ray`` started: its workers import regtune as
    they start, and the trials run on this node, where ``restock`` starts workers. (On a cluster reached by
    address, the workers start as Ray starts them.)"""
    return ray.is_initialized() and ray.get_runtime_context().gcs_address in _started


def worker_storage_url(url: str) -> str:
    """``url`` as Ray workers must see it: a relative SQLite path made absolute.

    Raises:
        RegtuneError: an in-memory SQLite database, which no worker process can open.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise RegtuneError(f"search.backend 'ray' needs a storage its worker processes can open, but got the "
                           f"in-memory SQLite database {url!r}; use a SQLite file or PostgreSQL")
    return parsed.set(database=str(Path(database).resolve())).render_as_string(hide_password=False)


def _trial_name(trial: TuneTrial) -> str:
    """``<stage>-<first trial number>``, ``+<more>`` for a batch (unique in a stage): Tune's logs then name the
    Optuna trials they mean."""
    numbers = [m.get("number") for m in trial.config.get("members", [])]
    more = f"+{len(numbers) - 1}" if len(numbers) > 1 else ""
    return f"{trial.config.get('stage')}-{numbers[0] if numbers else None}{more}"


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpus_per_trial(parallelism: int, threads: int) -> float:
    """A CPU per torch thread of a trial, or a share of the cluster's CPUs small enough for ``parallelism``
    trials to run."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return min(float(threads), math.floor(100 * cpus / parallelism) / 100) or 0.01
