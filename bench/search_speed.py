"""How many trials per second does a search run? The script a practitioner would write against regtune.

    python bench/search_speed.py [--trials 40] [--epochs 30] [--batch auto] [--parallelism 1]
                                 [--pruner median] [--also-unbatched] [--postgres] [--ray] [--ray-pairs 1]
                                 [--seeds 1] [--calls] [--pairs 1]

One invocation, one split of digits (regtune's own 70/15/15), one budget: N TPE trials
over λ₁, λ₂, dropout and label smoothing for an MLP 64-256-256-10, at most ``--epochs``
epochs with patience 5, batch 128, Adam 1e-3.

- *plain*: the script written by hand: one trial at a time, a DataLoader loop, the
  penalties added to the loss, default torch threads, in-memory Optuna TPE, the best
  trial's model kept for the test set.
- *regtune*: ``run_job`` on a fresh SQLite file with ``search.batch`` (default auto):
  a 1-trial baseline stage and an (N−1)-trial joint stage, so N trials in all, then
  the report (top_k 1, seeds 0: the chosen configuration is re-trained once and
  measured on the test split).
- *regtune on Ray* (``--ray``): the same job with ``search.backend: ray`` on a local
  cluster, each Tune trial carrying a batch; its trials/s over the Optuna backend's
  is printed as the Ray ratio. Starting the cluster is timed and printed apart, not
  counted in the search, as a service starts it once: ``ray.init``, then the warm workers
  it starts with, which import regtune and torch for 2-3 s after ``ray.init`` returns
  (the bench waits until they are idle). The Tune run and the job's worker processes
  are counted; a ``regtune run`` in a fresh process pays the start-up too. One search's speed
  moves by about 15 % from run to run on this machine, so one ratio of two searches is a rough
  measure: with ``--ray-pairs N`` the Optuna backend runs again before each Ray run after the
  first, beside it and with the cluster's daemons up, and the ratio is the median of the N pairs'.
  Before that Optuna run, the bench waits (timed, printed, not counted) for the workers the Ray job
  restocked as it ended to import regtune, as a service's next job a few seconds later finds them.

Prints per run: trials/s over the search (and over the whole run, report included),
the ratio to plain, the best validation loss, the chosen configuration's test loss,
the epochs trained (and epochs/s: pruning and early stopping change the epochs per
trial), and for regtune the share of the search's wall time spent in the storage calls made
during it (Optuna's, and regtune's batched writes; the seconds of every call of the run, the
first stage's opening and the report's reads included, are printed beside it; the garbage
collector's pauses that fell inside those calls are not storage, and are printed apart), on SQLite and,
with ``--postgres``, on a throwaway PostgreSQL cluster started as the tests start theirs; with
``--calls``, those calls by name (how many, their milliseconds, the share of the search each).
Timings on a shared machine move with its load: the load average is printed, and
ratios are only comparable within one invocation. The plain script's speed moves most (15-37 epochs/s
from run to run on one 2-core machine, its two threads' small products meeting whatever else runs), so
one ratio of two searches is a rough measure: with ``--pairs N`` the plain script and regtune run N
times each, alternately, on the same split and seed, and the ratio is the median of the N pairs'
(each pair's searches are the same trials and losses: only their speed differs, and the bench checks it).

One search's chosen test loss is one draw: with ``--seeds N`` everything runs for seeds 0 to N-1
(each its own split of digits, the plain script's ``torch.manual_seed`` and TPE seed, regtune's
job seed), and the end prints each measure's mean and standard deviation over them, and the
difference of the chosen test losses seed by seed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from _pg import find_bindir, running_server  # the tests' throwaway cluster
from optuna.trial import FrozenTrial, TrialState
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tuner.search._board
import tuner.search._trial
from tuner import parse_spec, run_job
from tuner.search import StageOutcome
from tuner.storage import open_storage, write_trials
from tuner.train import Dataset, load_dataset

SPACE = {  # regtune's spec and the plain script's suggest calls draw from the same priors
    "l1": {"low": 1e-6, "high": 1e-2, "log": True},
    "l2": {"low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.6},
    "label_smoothing": {"low": 0.0, "high": 0.3},
}
PATIENCE, BATCH_SIZE, LR, SEED = 5, 128, 1e-3, 0


def plain_script(data: Dataset, trials: int, epochs: int, seed: int = SEED) -> dict[str, Any]:
    """The hand-written search: a DataLoader loop per trial, in-memory Optuna, the best model kept.

    ``torch.manual_seed(seed)`` once at the start, as such a script seeds: each trial's initial weights,
    dropout masks and batch order then come from where the one generator has got to.
    """
    assert data.test is not None
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(data.train.X, data.train.y), batch_size=BATCH_SIZE, shuffle=True)
    models: dict[int, nn.Module] = {}
    epochs_run = [0]

    def objective(trial: optuna.Trial) -> float:
        l1 = trial.suggest_float("l1", SPACE["l1"]["low"], SPACE["l1"]["high"], log=True)
        l2 = trial.suggest_float("l2", SPACE["l2"]["low"], SPACE["l2"]["high"], log=True)
        p = trial.suggest_float("dropout", SPACE["dropout"]["low"], SPACE["dropout"]["high"])
        smoothing = trial.suggest_float("label_smoothing", SPACE["label_smoothing"]["low"],
                                        SPACE["label_smoothing"]["high"])
        model = nn.Sequential(nn.Linear(data.n_features, 256), nn.ReLU(), nn.Dropout(p), nn.Linear(256, 256),
                              nn.ReLU(), nn.Dropout(p), nn.Linear(256, data.n_outputs))
        weights = [m.weight for m in model if isinstance(m, nn.Linear)]
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        best, best_state, since = math.inf, None, 0
        for _ in range(epochs):
            epochs_run[0] += 1
            model.train()
            for xb, yb in loader:
                loss = F.cross_entropy(model(xb), yb, label_smoothing=smoothing)
                loss = loss + l1 * sum(w.abs().sum() for w in weights) + l2 * sum(w.pow(2).sum() for w in weights)
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                val = float(F.cross_entropy(model(data.val.X), data.val.y))
            if val < best:
                best, best_state, since = val, copy.deepcopy(model.state_dict()), 0
            else:
                since += 1
                if since >= PATIENCE:
                    break
        model.load_state_dict(best_state or model.state_dict())
        models[trial.number] = model
        return best

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    started = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    seconds = time.perf_counter() - started
    best_model = models[study.best_trial.number].eval()
    with torch.no_grad():
        test = float(F.cross_entropy(best_model(data.test.X), data.test.y))
    return {"trials": trials, "epochs": epochs_run[0], "search_s": seconds, "total_s": seconds,
            "best_val": study.best_value,
            "test_loss": test, "params": study.best_params}


class _Clock:
    """Progress hooks that time the search (first stage start to last stage end)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0

    def stage_started(self, name: str, study_name: str, total: int, done: int) -> None:
        self.start = self.start or time.perf_counter()

    def trial_finished(self, stage: str, trial: FrozenTrial) -> None:
        pass

    def stage_finished(self, outcome: StageOutcome) -> None:
        self.end = time.perf_counter()


_PRIVATE_CALLS = ("_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_write_queued")
"""What Optuna's trial cache calls on the database storage besides its public methods, and where
``TrialStorage.together`` writes what it queued."""

_SCOPES = ("together", "fresh_trials")
"""``TrialStorage``'s scopes: they write nothing themselves (``_write_queued`` is timed)."""


class _Spent:
    """The storage calls ``_time_storage`` timed: (start, seconds, seconds of garbage collection inside, name)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, float, str]] = []

    def __call__(self, start: float, end: float) -> tuple[float, float]:
        """Seconds of the calls that started within [start, end] (collections apart), and the collections'."""
        inside = [(seconds, collected) for t, seconds, collected, _ in self.calls if start <= t <= end]
        return sum(s - c for s, c in inside), sum(c for _, c in inside)

    def by_call(self, start: float, end: float) -> dict[str, tuple[int, float]]:
        """Per call's name, the calls that started within [start, end]: (how many, seconds without collections)."""
        out: dict[str, tuple[int, float]] = {}
        for t, seconds, collected, name in self.calls:
            if start <= t <= end:
                n, total = out.get(name, (0, 0.0))
                out[name] = (n + 1, total + seconds - collected)
        return out


def _time_storage(storage: optuna.storages.BaseStorage) -> _Spent:
    """Time the calls to ``storage`` (this instance) and to regtune's batched writes to it.

    Every public method, the private ones Optuna's trial cache calls instead (``_PRIVATE_CALLS``),
    and ``tuner.storage.write_trials`` (a trial's attributes or a batch's epoch reports in one
    transaction) are timed; a call made inside another timed call counts once. The function returned
    sums the seconds of the calls that started within a window (the search: not the data's loading
    before it, nor the report's reads after it), and apart from them the seconds Python's garbage
    collector ran inside those calls: a collection runs in whatever code allocates when it is due, and
    a full one walks the whole process's objects (torch's, Ray's, the plain script's; 0.2 s here), so
    the one that happened to start inside a storage call doubled the share of a search.
    """
    spent = _Spent()
    local = threading.local()

    def collecting(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            local.gc_started = time.perf_counter()
        elif getattr(local, "n", 0) and getattr(local, "gc_started", None) is not None:
            local.gc = getattr(local, "gc", 0.0) + time.perf_counter() - local.gc_started

    def timed(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            outer = getattr(local, "n", 0) == 0
            local.n = getattr(local, "n", 0) + 1
            if outer:
                local.gc = 0.0
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                local.n -= 1
                if outer:
                    spent.calls.append((t, time.perf_counter() - t, local.gc, name))
        return wrapper

    for name in dir(type(storage)):
        if ((not name.startswith("_") or name in _PRIVATE_CALLS) and name not in _SCOPES
                and callable(getattr(storage, name))):
            setattr(storage, name, timed(getattr(storage, name), name))
    for module in (tuner.search._trial, tuner.search._board):
        module.write_trials = timed(write_trials, "write_trials")  # type: ignore[attr-defined]
    gc.callbacks[:] = [c for c in gc.callbacks if getattr(c, "__name__", "") != "collecting"]  # an earlier run's
    gc.callbacks.append(collecting)
    return spent


def regtune_run(trials: int, epochs: int, batch: str, parallelism: int, pruner: str,
                url: str, backend: str = "optuna", seed: int = SEED) -> dict[str, Any]:
    """``run_job`` on the same data and budget: a baseline trial plus ``trials - 1`` joint trials."""
    spec = parse_spec({
        "name": f"speed-{backend}-b{batch}-p{parallelism}", "seed": seed,
        "dataset": {"source": "sklearn", "name": "digits", "split": {"val": 0.15, "test": 0.15}},
        "model": {"kind": "mlp", "hidden": [256, 256]},
        "training": {"epochs": epochs, "batch_size": BATCH_SIZE, "optimizer": "adam", "lr": LR,
                     "early_stopping": {"patience": PATIENCE}},
        "search": {"backend": backend, "sampler": "tpe", "pruner": pruner, "parallelism": parallelism,
                   "batch": batch if batch == "auto" else int(batch), "space": SPACE,
                   "stages": [{"name": "joint", "params": list(SPACE), "trials": trials - 1}]},
        "report": {"top_k": 1, "seeds": 0},
    })
    spent = _time_storage(open_storage(url))
    clock = _Clock()
    started = time.perf_counter()
    report = run_job(spec, storage=url, progress=clock)
    total = time.perf_counter() - started
    storage, collected = spent(clock.start or started, clock.end)
    search = clock.end - (clock.start or started)
    done = [t for s in report.stages for t in optuna.load_study(study_name=s.study_name, storage=url).trials]
    scored = [t for t in done if t.state == TrialState.COMPLETE]
    return {"trials": sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in done),
            "pruned": sum(t.state == TrialState.PRUNED for t in done),
            "epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in done),
            "search_s": search, "total_s": total, "storage_s": storage, "storage_gc_s": collected,
            "storage_all_s": sum(spent(-math.inf, math.inf)),
            "storage_calls": spent.by_call(clock.start or started, clock.end),
            "best_val": min(t.user_attrs["val_loss"] for t in scored),
            "test_loss": report.chosen.test_loss, "params": report.chosen.params}


def _row(name: str, r: dict[str, Any], base: dict[str, Any] | None) -> str:
    rate, whole = _rate(r), r["trials"] / r["total_s"]
    ratio = f"{rate / _rate(base):5.2f}x" if base else "    -"
    extra = f"  {r['epochs']} epochs ({r['epochs'] / r['search_s']:.2f}/s)"
    if "storage_s" in r:
        extra += (f", {r['pruned']} pruned, storage {100 * r['storage_s'] / r['search_s']:4.1f}% of search"
                  + (f" (+{r['storage_gc_s']:.2f} s of garbage collection inside its calls)"
                     if r["storage_gc_s"] >= 0.005 else "")
                  + (" (the driver's calls only)" if name.startswith("ray") else "")
                  + f" ({r['storage_all_s']:.2f} s with the stages' opening and the report's reads)")
    return (f"{name:<28} {rate:7.3f} trials/s ({whole:6.3f} with report)  {ratio}  best val {r['best_val']:.4f}"
            f"  chosen test {r['test_loss']:.4f}{extra}")


def shown_run(label: str, args: argparse.Namespace, plain: dict[str, Any], threads: int, url: str, *,
              batch: str | None = None, backend: str = "optuna", seed: int) -> dict[str, Any]:
    """``regtune_run`` with the command line's budget (``batch`` for ``--batch``), its row printed; torch's
    threads are set back to the default for the next run (``run_job`` sets its own)."""
    r = regtune_run(args.trials, args.epochs, batch or args.batch, args.parallelism, args.pruner, url,
                    backend=backend, seed=seed)
    torch.set_num_threads(threads)
    print(_row(label, r, plain), flush=True)
    if args.calls:
        print(_calls_table(r), flush=True)
    return r


def _calls_table(r: dict[str, Any]) -> str:
    """The storage calls made during the search, by name, the costliest first: how many, ms in all, ms each,
    and the share of the search (the driver's calls only, on Ray)."""
    lines = [f"    {'storage call':<22} {'calls':>5} {'ms':>8} {'ms each':>8} {'% of search':>11}"]
    for name, (n, seconds) in sorted(r["storage_calls"].items(), key=lambda item: -item[1][1]):
        lines.append(f"    {name:<22} {n:>5} {1000 * seconds:>8.1f} {1000 * seconds / n:>8.2f} "
                     f"{100 * seconds / r['search_s']:>11.2f}")
    return "\n".join(lines)


def ray_vs_optuna(args: argparse.Namespace, folder: Path, optuna_backend: dict[str, Any], plain: dict[str, Any],
                  threads: int, seed: int) -> float:
    """The same job on the Ray backend; its start-up apart, its trials/s as a ratio to the Optuna backend's."""
    os.environ.pop("RAY_ADDRESS", None)  # a local cluster, as the Optuna backend runs on this machine alone
    from tuner.backends.ray import ensure_ray  # Ray is heavy: imported only when asked for

    started = time.perf_counter()
    ensure_ray()
    inited = time.perf_counter() - started
    warm = _warm_workers_started()
    print(f"ray start: {time.perf_counter() - started:.1f} s (ray.init {inited:.1f} s, then its {warm} warm workers "
          "importing regtune), not counted below", flush=True)
    ratios = []
    try:
        for pair in range(args.ray_pairs):
            if pair:  # the Optuna backend again, beside the Ray run, under the same load (Ray's daemons up)
                # first the workers the last job restocked (run_job's last step) finish importing regtune, as the
                # cluster's first did above: a service's next job finds them so when it comes a few seconds later
                waited = time.perf_counter()
                restocked = _warm_workers_started()
                print(f"between jobs: {time.perf_counter() - waited:.1f} s for {restocked} restocked worker(s) to "
                      "import regtune, not counted below", flush=True)
                optuna_backend = shown_run(f"regtune batch {args.batch}, par {args.parallelism}", args, plain,
                                           threads, f"sqlite:///{folder}/pair{pair}.db", seed=seed)
            r = shown_run(f"ray batch {args.batch}, par {args.parallelism}", args, plain, threads,
                          f"sqlite:///{folder}/ray{pair}.db", backend="ray", seed=seed)
            ratios.append(_rate(r) / _rate(optuna_backend))
    finally:
        import ray

        ray.shutdown()  # its daemons would share the cores with the runs after it
    ratio, pairs = _median_of_pairs(ratios)
    print(f"ray / optuna backend: {ratio:.2f}x trials/s over the search (the issue asks >= 0.80){pairs}", flush=True)
    return ratio


def _warm_workers_started(timeout: float = 60.0) -> int:
    """Wait until the idle workers the local cluster started with have done their start-up: each imports
    regtune and torch as it starts (``preload_python_modules``, about 2.5 s of CPU), and a job's first trials
    take them. Done when no idle worker below this process used CPU for half a second. Returns how many."""
    def idle() -> dict[int, int]:  # pid -> CPU ticks of this process's descendants titled ray::IDLE
        parents, found = {}, {}
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
                if (entry / "cmdline").read_bytes().startswith(b"ray::IDLE"):
                    found[int(entry.name)] = int(stat[11]) + int(stat[12])
            except (OSError, ValueError, IndexError):
                continue
        below, frontier = set(), {os.getpid()}
        while frontier:
            frontier = {pid for pid, ppid in parents.items() if ppid in frontier}
            below |= frontier
        return {pid: ticks for pid, ticks in found.items() if pid in below}

    deadline, last = time.monotonic() + timeout, idle()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = idle()
        if now and now == last:
            return len(now)
        last = now
    return len(last)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", default="auto", help="regtune's search.batch: auto or K")
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--pruner", default="median", choices=["none", "median", "hyperband"])
    p.add_argument("--also-unbatched", action="store_true", help="also run regtune with batch 1 (today's loop)")
    p.add_argument("--postgres", action="store_true",
                   help="also run regtune's batched job on PostgreSQL (a throwaway cluster, as the tests start one)")
    p.add_argument("--ray", action="store_true", help="also run the same job on the Ray backend (a local cluster)")
    p.add_argument("--ray-pairs", type=int, default=1,
                   help="with --ray: the Ray run's ratio is the median of N pairs; pairs after the first run the "
                        "Optuna backend again right before the Ray run, with the cluster up (one search's speed "
                        "moves by 15%% from run to run here)")
    p.add_argument("--calls", action="store_true",
                   help="after each regtune run, its storage calls during the search by name: how many, and their ms")
    p.add_argument("--pairs", type=int, default=1,
                   help="the ratio to the plain script is the median of N pairs (the plain script, then regtune, "
                        "on the same seed), run alternately: the plain script's speed moves a lot from run to run")
    p.add_argument("--seeds", type=int, default=1,
                   help="run everything for seeds 0 .. N-1 (the split, the plain script's torch seed and sampler, "
                        "regtune's job seed) and summarize: one search's chosen test loss is one draw")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    for seed in range(SEED, SEED + args.seeds):
        rows.append(one_seed(args, seed, threads))
    if args.seeds > 1:
        summarize(rows, args.pairs)
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other processes share these cores)")


def one_seed(args: argparse.Namespace, seed: int, threads: int) -> dict[str, Any]:
    """Every run for one seed, printed as it ends; the plain script's, regtune's and (asked for) Ray's results."""
    data = load_dataset(parse_spec({"name": "d", "seed": seed, "dataset": {"source": "sklearn", "name": "digits"},
                                    "search": {"space": {"l2": SPACE["l2"]}}}).dataset, seed)
    print(f"seed {seed}: digits ({len(data.train)} train / {len(data.val)} val / {len(data.test or [])} test), "
          f"MLP 64-256-256-10, {args.trials} trials, <= {args.epochs} epochs, patience {PATIENCE}; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start")
    plain = plain_script(data, args.trials, args.epochs, seed)
    torch.set_num_threads(threads)  # run_job sets its own; each run starts from the default
    print(_row(f"plain script ({threads} threads)", plain, None), flush=True)
    result: dict[str, Any] = {"seed": seed, "plain": plain}
    with tempfile.TemporaryDirectory() as folder:
        first = shown_run(f"regtune batch {args.batch}, par {args.parallelism}", args, plain, threads,
                          f"sqlite:///{folder}/regtune0.db", seed=seed)
        result["regtune"] = first
        result["ratio"] = _paired_ratio(args, data, folder, threads, seed, plain, first)
        if args.also_unbatched:
            shown_run(f"regtune batch 1, par {args.parallelism}", args, plain, threads, f"sqlite:///{folder}/b1.db",
                      batch="1", seed=seed)
        if args.ray:
            result["ray_ratio"] = ray_vs_optuna(args, Path(folder), result["regtune"], plain, threads, seed)
    if args.postgres:
        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("--postgres: PostgreSQL is not installed (apt-get install postgresql)")
        with running_server(bindir) as pg, pg.database() as url:
            result["postgres"] = shown_run(f"regtune batch {args.batch}, postgres", args, plain, threads, url,
                                           seed=seed)
    return result


def _rate(r: dict[str, Any]) -> float:
    return float(r["trials"] / r["search_s"])


def _paired_ratio(args: argparse.Namespace, data: Dataset, folder: str, threads: int, seed: int,
                  plain: dict[str, Any], regtune: dict[str, Any]) -> float:
    """regtune's trials/s over the plain script's: with ``--pairs N``, the median of N pairs' ratios, the pairs
    after the first run alternately now (the plain script, then regtune on a fresh SQLite file).

    Raises:
        SystemExit: a pair's searches differ from the first pair's (their trials or losses): the ratio would
            compare different searches.
    """
    ratios = [_rate(regtune) / _rate(plain)]
    for pair in range(1, args.pairs):
        again = plain_script(data, args.trials, args.epochs, seed)
        torch.set_num_threads(threads)
        print(_row(f"plain script, pair {pair + 1}", again, None), flush=True)
        r = shown_run(f"regtune, pair {pair + 1}", args, again, threads, f"sqlite:///{folder}/regtune{pair}.db",
                      seed=seed)
        for name, first, now in (("plain script", plain, again), ("regtune", regtune, r)):
            searched = [(first[k], now[k]) for k in ("trials", "epochs", "best_val", "test_loss")]
            if any(a != b for a, b in searched):
                raise SystemExit(f"pair {pair + 1}: the {name}'s search differs from pair 1's (trials, epochs, best "
                                 f"val, chosen test: {searched}); its speed would not compare the same search")
        ratios.append(_rate(r) / _rate(again))
    ratio, pairs = _median_of_pairs(ratios)
    if pairs:
        print(f"regtune / plain script: {ratio:.2f}x trials/s over the search{pairs}", flush=True)
    return ratio


def _median_of_pairs(ratios: list[float]) -> tuple[float, str]:
    """The pairs' median ratio, and how it was taken as printed after it (empty for one pair)."""
    told = f", the median of {len(ratios)} pairs ({', '.join(f'{x:.2f}' for x in ratios)})" if len(ratios) > 1 else ""
    return statistics.median(ratios), told


def summarize(rows: list[dict[str, Any]], pairs: int) -> None:
    """Over the seeds: each measure's mean and standard deviation (``pairs``: the pairs each seed's ratio is the
    median of), and the chosen test losses side by side."""
    def stat(values: list[float]) -> str:
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return f"{mean:.4f} ± {sd:.4f}"

    plain, regtune = [r["plain"] for r in rows], [r["regtune"] for r in rows]
    print(f"over {len(rows)} seeds (mean ± sd):")
    print(f"  trials/s: plain {stat([_rate(r) for r in plain])}, regtune {stat([_rate(r) for r in regtune])}, "
          f"ratio {stat([r['ratio'] for r in rows])}"
          + (f" (each seed's the median of {pairs} pairs)" if pairs > 1 else "")
          + f", >= 5x on {sum(r['ratio'] >= 5 for r in rows)} of {len(rows)}")
    print(f"  best val: plain {stat([r['best_val'] for r in plain])}, regtune {stat([r['best_val'] for r in regtune])}")
    print(f"  chosen test: plain {stat([r['test_loss'] for r in plain])}, "
          f"regtune {stat([r['test_loss'] for r in regtune])}; regtune's minus plain's per seed "
          f"{stat([r['test_loss'] - p['test_loss'] for r, p in zip(regtune, plain, strict=True)])}, "
          f"no worse in {sum(r['test_loss'] <= p['test_loss'] for r, p in zip(regtune, plain, strict=True))} of "
          f"{len(rows)}")
    for database in ("regtune", "postgres"):
        if all(database in r for r in rows):
            shares = [100 * r[database]["storage_s"] / r[database]["search_s"] for r in rows]
            print(f"  storage share, {'SQLite' if database == 'regtune' else 'PostgreSQL'}: {stat(shares)} % "
                  f"({min(shares):.2f}-{max(shares):.2f}; under 5 % on {sum(x < 5 for x in shares)} of {len(rows)})")
    if all("ray_ratio" in r for r in rows):
        print(f"  ray / optuna backend: {stat([r['ray_ratio'] for r in rows])}")


if __name__ == "__main__":
    main()
