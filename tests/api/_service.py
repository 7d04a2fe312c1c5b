"""Helpers of the service's tests: tiny job specs, polling, worker processes."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _gate import ENV as GATE_ENV
from _gate import GATED, EpochGate

# The smallest real job: iris, a linear model, 2 epochs, one trial per stage, no re-training for the report.
TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"source": "sklearn", "name": "iris"},
    "model": {"kind": "linear"},
    "training": {"epochs": 2, "batch_size": 64},
    "search": {
        "sampler": "random",
        "pruner": "none",
        "space": {"l2": {"low": 1.0e-5, "high": 1.0e-1, "log": True}},
        "stages": [{"name": "baseline", "params": [], "trials": 1}, {"name": "l2", "params": ["l2"], "trials": 1}],
    },
    "report": {"top_k": 1, "seeds": 0},
}


def make_spec(name: str = "tiny", *, epochs: int = 2, trials: int = 1, hidden: list[int] | None = None,
              batch_size: int = 64) -> dict[str, Any]:
    """TINY with a name, epochs, trials in the l2 stage; ``hidden`` makes it an MLP.

    Its trials train one at a time (``search.batch: 1``): an ``EpochGate`` holds the lone loop's ``train``.
    """
    spec = copy.deepcopy(TINY)
    spec["name"] = name
    spec["search"]["batch"] = 1
    spec["training"]["epochs"] = epochs
    spec["training"]["batch_size"] = batch_size
    spec["search"]["stages"][1]["trials"] = trials
    if hidden:
        spec["model"] = {"kind": "mlp", "hidden": hidden}
    return spec


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, every: float = 0.1, what: str = "it") -> Any:
    """Poll ``predicate`` until it answers something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    pytest.fail(f"waited {timeout}s for {what}")


def wait_status(client: Any, job_id: str, *statuses: str, timeout: float = 5.0) -> dict[str, Any]:
    """``GET /jobs/{id}`` once it shows one of ``statuses`` (an answer may be up to a second old)."""
    def reached() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] in statuses else None

    found: dict[str, Any] = wait_for(reached, timeout, every=0.1, what=f"job {job_id} to be {' or '.join(statuses)}")
    return found


def regtune() -> str:
    found = shutil.which("regtune", path=str(Path(sys.executable).parent)) or shutil.which("regtune")
    assert found, "the regtune command is not installed (pip install -e .)"
    return found


def worker_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGTUNE_")}
    return env | {"REGTUNE_DATABASE_URL": url, "REGTUNE_LEASE_SECONDS": "4", "REGTUNE_HEARTBEAT_SECONDS": "1",
                  "REGTUNE_POLL_SECONDS": "0.2"} | extra


def start_worker(url: str, log: Path, gate: EpochGate | None = None, **env: str) -> subprocess.Popen[bytes]:
    """``regtune worker`` as its own process (group), its output in ``log``; ``gate`` holds one of its trials."""
    cmd = [sys.executable, str(GATED), "worker"] if gate else [regtune(), "worker"]
    if gate:
        env[GATE_ENV] = gate.env
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=worker_env(url, **env),
                                start_new_session=True)
