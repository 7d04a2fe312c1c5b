"""Where the driver answers a batch's requests for members: a small actor that imports nothing of regtune.

The actor's class is pickled by value (``register_pickle_by_value``), so the worker process that hosts
it unpickles it with what a Ray worker already has. Pickled by reference, as a class in a module of the
``tuner`` package is by default, its worker imported that package, torch with it, while the batches
trained beside it: about half a second of a core, on a 2-core machine, and the first request waited
(137-237 ms) for it. (On the local cluster ``ensure_ray`` starts, the actor takes one of the workers that
imported regtune as the cluster started; on another cluster its worker imports nothing more.)

One actor serves every job of a driver process (``shared_mailbox``), each Tune run in a box of its
own: an actor takes a worker process no task or actor has used, and a cluster starts only a few, so a
mailbox per job started a process per job, which imported torch and regtune while the job's first
batch trained (3.4 s of a core, profiled on bench/search_speed.py's job, a second job on one cluster).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from typing import Any

import ray
import ray.cloudpickle

__all__ = ["MAILBOX_NAME", "Mailbox", "pickled_by_value", "shared_mailbox", "start_mailbox"]


class Mailbox:
    """The driver's answers to batches asking for members (``StageSearcher._refill``), kept until the asking
    worker takes them, by box (a Tune run's), Tune trial and request; an async actor, so a worker waits for
    its answer without holding the others up."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        self.arrived: dict[tuple[str, str, int], asyncio.Event] = {}

    def _event(self, key: tuple[str, str, int]) -> asyncio.Event:
        return self.arrived.setdefault(key, asyncio.Event())

    async def put(self, box: str, trial_id: str, request: int, members: list[dict[str, Any]]) -> None:
        self.answers[box, trial_id, request] = members
        self._event((box, trial_id, request)).set()

    async def take(self, box: str, trial_id: str, request: int, timeout: float) -> list[dict[str, Any]] | None:
        """The answer to request ``request`` of Tune trial ``trial_id``, or None when none came in ``timeout``."""
        key = (box, trial_id, request)
        try:
            await asyncio.wait_for(self._event(key).wait(), timeout)
        except TimeoutError:
            return None
        finally:
            self.arrived.pop(key, None)
        return self.answers.pop(key)

    async def forget(self, box: str) -> None:
        """Drop what is left in ``box`` (answers no batch took: its Tune trial had ended)."""
        for key in [k for k in self.answers if k[0] == box]:
            del self.answers[key]
            self.arrived.pop(key, None)


def pickled_by_value() -> type[Mailbox]:
    """``Mailbox``, with this module registered to be pickled by value (see the module's docstring)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return Mailbox


def start_mailbox(name: str) -> Any:
    """Start a ``Mailbox`` actor named ``name`` (workers find it with ``ray.get_actor``); its handle."""
    return ray.remote(num_cpus=0)(pickled_by_value()).options(name=name).remote()


MAILBOX_NAME = f"regtune-mailbox-{uuid.uuid4().hex}"
"""This process's ``Mailbox`` actor's name, on whichever cluster it is connected to."""

_lock = threading.Lock()
_made: list[Any] = []  # the handle that made it: Ray ends an actor when that one is gone (``get_actor``'s do not count)


def shared_mailbox() -> Any:
    """This process's ``Mailbox`` actor (named ``MAILBOX_NAME``), started if the cluster has none: at the first
    job, or on a cluster connected to since. It lives while the process holds the handle that made it and its
    connection (Ray ends an actor with the driver that made it)."""
    with _lock:
        try:
            return ray.get_actor(MAILBOX_NAME)
        except ValueError:  # none on this cluster yet
            _made[:] = [start_mailbox(MAILBOX_NAME)]
            return _made[0]
