"""A gate in the training loop, so that a test can catch a job in the middle of a trial on any machine.

A test that must act while a trial trains (cancel it, SIGTERM or SIGKILL its runner) cannot bet on how
long a trial takes: on a fast machine it ends before a poll sees it. The gate holds the ``trial``-th
training run of the process at the end of its ``epoch``-th epoch, before the epoch is reported, until
the test releases it. The test waits for the gate, acts, and releases it (or kills the process).

Files carry the handshake, so the same gate works in the test's own process (``install``) and in a
``regtune`` subprocess started through ``tests/_gated.py`` with ``REGTUNE_TEST_GATE`` set.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

GATED = Path(__file__).with_name("_gated.py")  # ``python GATED ARGS…`` is ``regtune ARGS…`` with the gate
ENV = "REGTUNE_TEST_GATE"  # "<folder>:<trial>:<epoch>" for a gated subprocess
TRAIN_SITE = ("tuner.search._trial", "train")  # the module whose ``train`` runs every trial, and that name


class EpochGate:
    """Holds the ``trial``-th call of ``train`` in this process at the end of epoch ``epoch``."""

    def __init__(self, folder: Path, trial: int, epoch: int = 1) -> None:
        self.folder, self.trial, self.epoch = folder, trial, epoch
        folder.mkdir(parents=True, exist_ok=True)
        self.reached_file, self.release_file = folder / "reached", folder / "release"
        self._calls = 0
        self._lock = threading.Lock()

    @property
    def env(self) -> str:
        return f"{self.folder}:{self.trial}:{self.epoch}"

    @classmethod
    def from_env(cls, value: str) -> EpochGate:
        folder, trial, epoch = value.rsplit(":", 2)
        return cls(Path(folder), int(trial), int(epoch))

    def wrap(self, train: Callable[..., Any]) -> Callable[..., Any]:
        """``train`` whose ``trial``-th call waits at the end of epoch ``epoch`` until released."""
        @functools.wraps(train)
        def gated(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._calls += 1
                mine = self._calls == self.trial
            if not mine:
                return train(*args, **kwargs)
            bound = inspect.signature(train).bind(*args, **kwargs)
            on_epoch = bound.arguments.get("on_epoch")

            def held(epoch: int, *rest: Any) -> None:
                if epoch == self.epoch:
                    self.reached_file.touch()
                    while not self.release_file.exists():
                        time.sleep(0.01)
                if on_epoch is not None:
                    on_epoch(epoch, *rest)

            bound.arguments["on_epoch"] = held
            return train(*bound.args, **bound.kwargs)
        return gated

    def install(self, monkeypatch: pytest.MonkeyPatch) -> EpochGate:
        """Gate the training runs of this process (for a runner or ``run_job`` in a thread of the test)."""
        module, name = TRAIN_SITE
        monkeypatch.setattr(f"{module}.{name}", self.wrap(getattr(__import__(module, fromlist=[name]), name)))
        return self

    def install_here(self) -> None:
        """Gate the training runs of this process for good (``tests/_gated.py``, in a subprocess)."""
        module_name, name = TRAIN_SITE
        module = __import__(module_name, fromlist=[name])
        setattr(module, name, self.wrap(getattr(module, name)))

    def wait(self, timeout: float = 240.0, alive: Callable[[], bool] = lambda: True) -> None:
        """Until a training run waits at the gate; fails the test when ``alive`` turns false or time runs out."""
        deadline = time.monotonic() + timeout
        while not self.reached_file.exists():
            if not alive():
                pytest.fail("the process under test ended before it reached the gate")
            if time.monotonic() > deadline:
                pytest.fail(f"waited {timeout}s for training run {self.trial} to reach epoch {self.epoch}")
            time.sleep(0.02)

    def release(self) -> None:
        self.release_file.touch()
