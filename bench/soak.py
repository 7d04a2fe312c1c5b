"""Soak: many small jobs, concurrent clients, runners killed and the database restarted under them.

A throwaway PostgreSQL cluster (the tests' helper), ``regtune serve --no-runner`` and two ``regtune
worker`` processes. ``--clients`` threads submit ``--jobs`` tiny jobs over HTTP (each with an
``Idempotency-Key``, retried through outages). Every ``--kill-every`` seconds one runner is killed with
SIGKILL and started again; the database is stopped and started ``--db-restarts`` times. At the end:
every job must have succeeded, each stage study must hold exactly its budget of completed trials
(no stage ran twice), and no trial may be left RUNNING. Prints the figures; exits 1 if any check fails.

    python bench/soak.py                      # 300 jobs, 20 clients, a kill every 30 s, 2 restarts
    python bench/soak.py --jobs 60 --kill-every 10
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import optuna
from _pg import find_bindir, running_server  # the tests' throwaway cluster
from optuna.trial import TrialState

SPEC: dict[str, Any] = {  # the smallest real job: iris, a linear model, one trial per stage
    "seed": 0,
    "dataset": {"source": "sklearn", "name": "iris"},
    "model": {"kind": "linear"},
    "training": {"epochs": 3, "batch_size": 64},
    "search": {"sampler": "random", "pruner": "none",
               "space": {"l2": {"low": 1.0e-5, "high": 1.0e-1, "log": True}},
               "stages": [{"name": "baseline", "params": [], "trials": 1},
                          {"name": "l2", "params": ["l2"], "trials": 2}]},
    "report": {"top_k": 1, "seeds": 0},
}
BUDGETS = {"baseline": 1, "l2": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def regtune() -> str:
    found = shutil.which("regtune", path=str(Path(sys.executable).parent)) or shutil.which("regtune")
    if not found:
        raise SystemExit("the regtune command is not installed (pip install -e .)")
    return found


class Service:
    """serve and the runners as process groups, their logs in one folder."""

    def __init__(self, url: str, logs: Path) -> None:
        self.logs, self.port = logs, free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REGTUNE_")} | {
            "REGTUNE_DATABASE_URL": url, "REGTUNE_LEASE_SECONDS": "6", "REGTUNE_HEARTBEAT_SECONDS": "1",
            "REGTUNE_POLL_SECONDS": "0.2"}
        self.serve = self._start("serve", ["serve", "--no-runner", "--port", str(self.port)])
        self.runners: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: collections.Counter[str] = collections.Counter()

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as out:
            return subprocess.Popen([regtune(), *args], stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True)

    def start_runner(self, name: str) -> None:
        self.starts[name] += 1
        self.runners[name] = self._start(f"runner-{name}", ["worker"])

    def kill_runner(self, name: str) -> None:
        proc = self.runners[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for proc in [self.serve, *self.runners.values()]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [self.serve, *self.runners.values()]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("runner-*.log")))


def submit_all(base: str, n: int, clients: int, retries: collections.Counter[str]) -> list[str]:
    """POST n jobs from ``clients`` threads; each retried through outages under one Idempotency-Key."""
    def one(i: int) -> str:
        key = f"soak-{i}"
        with httpx.Client(base_url=base, timeout=30) as client:
            while True:
                try:
                    r = client.post("/jobs", json=SPEC | {"name": f"soak{i}"}, headers={"Idempotency-Key": key})
                    if r.status_code in (200, 201, 202):
                        job_id: str = r.json()["id"]
                        return job_id
                    retries[f"HTTP {r.status_code}"] += 1
                except httpx.HTTPError as exc:
                    retries[type(exc).__name__] += 1
                time.sleep(0.5)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(n)))


def wait_healthy(base: str, svc: Service, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.serve.poll() is not None:
            raise SystemExit(f"regtune serve exited:\n{(svc.logs / 'serve.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"regtune serve did not answer /healthz in {timeout:.0f}s")


def all_jobs(base: str) -> list[dict[str, Any]]:
    """Every job, paged through ``GET /jobs``; [] while the database is away."""
    items: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            while True:
                page = client.get("/jobs", params={"limit": 100, "offset": len(items)})
                if page.status_code != 200:
                    return []
                body = page.json()
                items += body["items"]
                if len(items) >= body["total"] or not body["items"]:
                    return items
    except httpx.HTTPError:
        return []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--kill-every", type=float, default=30.0, help="seconds between runner kills")
    p.add_argument("--db-restarts", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800.0)
    args = p.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logs = Path(tempfile.mkdtemp(prefix="regtune-soak-"))
    with running_server(bindir) as pg, pg.database() as url:
        svc = Service(url, logs)
        base = f"http://127.0.0.1:{svc.port}"
        try:
            wait_healthy(base, svc)
            for name in ("a", "b"):
                svc.start_runner(name)
            retries: collections.Counter[str] = collections.Counter()
            started = time.monotonic()
            submitted: list[str] = []
            submitter = threading.Thread(target=lambda: submitted.extend(
                submit_all(base, args.jobs, args.clients, retries)))
            submitter.start()
            kills, restarts, victim = 0, 0, "a"
            next_kill = started + args.kill_every
            restart_at = [started + args.kill_every * (1.5 + 2 * k) for k in range(args.db_restarts)]
            while True:
                now = time.monotonic()
                if now > started + args.timeout:
                    print(f"timed out after {args.timeout:.0f}s", file=sys.stderr)
                    break
                if restart_at and now >= restart_at[0]:
                    restart_at.pop(0)
                    pg.stop()
                    time.sleep(5)  # an outage long enough for every process to meet it
                    pg.start()
                    restarts += 1
                if now >= next_kill:
                    svc.kill_runner(victim)
                    svc.start_runner(victim)
                    kills += 1
                    victim = "b" if victim == "a" else "a"
                    next_kill = now + args.kill_every
                jobs = all_jobs(base)
                if (not submitter.is_alive() and not restart_at and len(jobs) == args.jobs
                        and all(j["status"] not in ("queued", "running") for j in jobs)):
                    break
                time.sleep(1)
            wall = time.monotonic() - started
            submitter.join()
            return report(url, all_jobs(base), args, wall, kills, restarts, retries, svc)
        finally:
            svc.close()
            print(f"logs: {logs}")


def report(url: str, jobs: list[dict[str, Any]], args: argparse.Namespace, wall: float, kills: int, restarts: int,
           retries: collections.Counter[str], svc: Service) -> int:
    statuses = collections.Counter(j["status"] for j in jobs)
    attempts = collections.Counter(j["attempts"] for j in jobs)
    storage = optuna.storages.RDBStorage(url)
    over_budget: list[tuple[str, str, str | int]] = []
    running = interrupted = 0
    for job in jobs:
        for stage, budget in BUDGETS.items():
            try:
                trials = optuna.load_study(study_name=f"{job['study_prefix']}/{stage}",
                                           storage=storage).get_trials(deepcopy=False)
            except KeyError:
                over_budget.append((job["id"], stage, "no study"))
                continue
            complete = sum(t.state == TrialState.COMPLETE for t in trials)
            running += sum(t.state == TrialState.RUNNING for t in trials)
            interrupted += sum(bool(t.user_attrs.get("interrupted")) for t in trials)
            if complete != budget:
                over_budget.append((job["id"], stage, complete))
    claims = svc.log_text().count("claimed job")
    print(f"jobs {len(jobs)}/{args.jobs} in {wall:.0f}s ({len(jobs) / wall:.2f} jobs/s), {args.clients} clients, "
          f"2 runners on PostgreSQL; runners killed {kills} times, database restarted {restarts} times")
    print(f"status: {dict(statuses)}; attempts per job: {dict(sorted(attempts.items()))}; claims {claims}")
    print(f"trials: {interrupted} interrupted (marked failed), {running} left RUNNING; "
          f"stages off their budget: {len(over_budget)}; client retries: {dict(retries)}")
    ok = (len(jobs) == args.jobs and statuses == {"succeeded": args.jobs} and running == 0 and not over_budget
          and restarts == args.db_restarts)
    if over_budget:
        print(f"off budget (job, stage, completed): {over_budget[:10]}")
    print("soak: ok" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
