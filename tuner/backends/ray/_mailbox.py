"""Where the driver answers a batch's requests for members: a small actor that imports nothing of regtune.

The actor's class is pickled by value (``register_pickle_by_value``), so the worker process that hosts
it unpickles it with what a Ray worker already has. Pickled by reference, as a class in a module of the
``tuner`` package is by default, its worker imported that package, torch with it, while the batches
trained beside it: about half a second of a core, on a 2-core machine, and the first request waited
(137-237 ms) for it. (On the local cluster ``ensure_ray`` starts, the actor takes one of the workers that
imported regtune as the cluster started; on another cluster its worker imports nothing more.)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import ray
import ray.cloudpickle

__all__ = ["Mailbox", "pickled_by_value", "start_mailbox"]


class Mailbox:
    """The driver's answers to batches asking for members (``StageSearcher._refill``), kept until the asking
    worker takes them; an async actor, so a worker waits for its answer without holding the others up."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.arrived: dict[tuple[str, int], asyncio.Event] = {}

    def _event(self, key: tuple[str, int]) -> asyncio.Event:
        return self.arrived.setdefault(key, asyncio.Event())

    async def put(self, trial_id: str, request: int, members: list[dict[str, Any]]) -> None:
        self.answers[trial_id, request] = members
        self._event((trial_id, request)).set()

    async def take(self, trial_id: str, request: int, timeout: float) -> list[dict[str, Any]] | None:
        """The answer to request ``request`` of Tune trial ``trial_id``, or None when none came in ``timeout``."""
        key = (trial_id, request)
        try:
            await asyncio.wait_for(self._event(key).wait(), timeout)
        except TimeoutError:
            return None
        finally:
            self.arrived.pop(key, None)
        return self.answers.pop(key)


def pickled_by_value() -> type[Mailbox]:
    """``Mailbox``, with this module registered to be pickled by value (see the module's docstring)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return Mailbox


def start_mailbox(name: str) -> Any:
    """Start a ``Mailbox`` actor named ``name`` (workers find it with ``ray.get_actor``); its handle."""
    return ray.remote(num_cpus=0)(pickled_by_value()).options(name=name).remote()
