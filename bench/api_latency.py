"""Latency of ``GET /jobs/{id}`` while a job trains: ``regtune serve`` with its runner, N concurrent clients.

    python bench/api_latency.py [--clients 20] [--seconds 20] [--think-ms 0]

Starts ``regtune serve`` on a free port over a fresh SQLite file, submits a job
(digits, an MLP, enough trials to outlast the measurement), waits until a trial
is training, then has ``--clients`` clients poll ``GET /jobs/{id}`` for
``--seconds``, each sending its next request when the last one answered (after
``--think-ms``). Prints p50/p90/p99/max and the throughput; checks that the job
kept training meanwhile. Nothing is asserted: the numbers are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

SPEC = {
    "name": "bench-latency",
    "seed": 0,
    "dataset": {"source": "sklearn", "name": "digits"},
    "model": {"kind": "mlp", "hidden": [128, 128]},
    "training": {"epochs": 30, "batch_size": 64},
    "search": {"sampler": "tpe", "pruner": "none",
               "space": {"l2": {"low": 1e-6, "high": 1e-2, "log": True}, "dropout": {"low": 0.0, "high": 0.5}},
               "stages": [{"name": "baseline", "params": [], "trials": 1},
                          {"name": "joint", "params": ["l2", "dropout"], "trials": 200}]},
    "report": {"top_k": 1, "seeds": 0},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"bench: gave up waiting for {what}")


async def poll(host: str, port: int, path: str, clients: int, seconds: float, think: float) -> list[float]:
    """``clients`` keep-alive connections, each sending its next GET when the last one answered.

    A minimal HTTP/1.1 client on purpose: httpx spends a few milliseconds of CPU per
    request, and 20 of them in one process on a small machine would measure the client.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def one_client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"bench: GET {path} answered {head.splitlines()[0].decode()}")
                if think:
                    await asyncio.sleep(think)
        finally:
            writer.close()

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause of each client between requests")
    parser.add_argument("--threads", type=int, help="REGTUNE_API_THREADS for the server (default: its own)")
    args = parser.parse_args()

    regtune = shutil.which("regtune", path=str(Path(sys.executable).parent)) or shutil.which("regtune")
    if regtune is None:
        raise SystemExit("bench: no regtune command; pip install -e . first")
    workdir = Path(tempfile.mkdtemp(prefix="regtune-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGTUNE_")}
    env["REGTUNE_DATABASE_URL"] = f"sqlite:///{workdir}/bench.db"
    if args.threads:
        env["REGTUNE_API_THREADS"] = str(args.threads)
    log = (workdir / "serve.log").open("wb")
    serve = subprocess.Popen([regtune, "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                             env=env, cwd=workdir, start_new_session=True)
    try:
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 120, "regtune serve")
        job = httpx.post(f"{base}/jobs", content=yaml.safe_dump(SPEC),
                         headers={"content-type": "application/yaml"}).json()
        path = f"/jobs/{job['id']}"

        def training() -> bool:
            stages = httpx.get(base + path).json()["stages"]
            return sum(s["running"] for s in stages) == 1 and stages[0]["done"] == 1

        wait_until(training, 300, "the job's runner to be training a trial")
        before = httpx.get(base + path).json()
        latencies = asyncio.run(poll("127.0.0.1", port, path, args.clients, args.seconds, args.think_ms / 1000))
        after = httpx.get(base + path).json()
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(60)
        log.close()
    done = [sum(s["done"] for s in j["stages"]) for j in (before, after)]
    ms = [1000 * x for x in latencies]
    print(f"regtune serve (API + embedded runner), SQLite, {os.cpu_count()} CPUs; GET /jobs/{{id}} by "
          f"{args.clients} concurrent clients for {args.seconds:.0f}s, think time {args.think_ms:.0f} ms, "
          f"API threads {args.threads or 'default'}")
    print(f"  requests {len(ms)}  throughput {len(ms) / args.seconds:.0f}/s")
    print(f"  p50 {statistics.median(ms):.1f} ms  p90 {percentile(ms, 0.90):.1f} ms  "
          f"p99 {percentile(ms, 0.99):.1f} ms  max {max(ms):.1f} ms")
    print(f"  the job trained meanwhile: status {after['status']}, trials done {done[0]} -> {done[1]}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
