"""``regtune serve``'s embedded runner, kept alive: whenever it exits (killed, crashed), a new one starts.

Without this, a runner killed with ``kill -9`` left ``serve`` answering requests and queueing jobs
that nobody would ever run. Restarts back off (1 s, 2 s, ... at most ``cap``) when a new runner
dies at once, and start from 1 s again once one has lived a while.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from api.resilience import Backoff

__all__ = ["RunnerSupervisor"]

log = logging.getLogger("regtune")
HEALTHY_AFTER_S = 60.0  # a runner that lived this long was fine: the next restart waits the shortest time


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class RunnerSupervisor:
    """Starts a runner with ``start`` and starts another whenever it ends, until ``stop``."""

    def __init__(self, start: Callable[[], subprocess.Popen[bytes]], *, cap: float = 30.0) -> None:
        self._start = start
        self._backoff = Backoff(cap=cap)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._watch, name="runner-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        """The current runner's process id."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        with self._lock:
            self._proc = self._start()
        log.info("started the embedded runner (pid %d)", self._proc.pid)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            proc = self._proc
            assert proc is not None
            born = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - born >= HEALTHY_AFTER_S:
                self._backoff.reset()
            delay = self._backoff.next()
            log.warning("the embedded runner (pid %d) %s; starting a new one in %.0fs", proc.pid, _how(code), delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self._proc = self._start()
                except OSError as exc:  # cannot even start a process: try again after the next wait
                    log.error("could not start a new runner: %s", exc)
                    continue
            log.info("started a new embedded runner (pid %d)", self._proc.pid)

    def stop(self, timeout: float) -> None:
        """SIGTERM the runner (it finishes its epoch and gives its job back), then SIGKILL after ``timeout``."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
