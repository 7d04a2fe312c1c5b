"""The C allocator's settings for batched training: keep freed memory for the next step.

A batched step allocates and frees tensors of a few MB (K members' activations, gradients,
Adam's temporaries). glibc's malloc serves blocks that large from fresh ``mmap`` calls, or
trims them off the heap when freed, so a step often takes their pages anew from the kernel.
Measured on a batch like bench/search_speed.py's (digits, MLP 64-256-256-10, K = 10, 40
trials refilled as they end, 2 cores): 610,000 to 800,000 page faults and 1.5 to 2.0 s of
system time in glibc's settings, 105,000 and 0.5 s with freed memory kept
(tests/tuner/train/test_memory.py counts a smaller batch's). Time per member-epoch moved
less than this machine's noise between processes; in one process, alternating these
settings with 128 KiB ones, a batch took 12.0-16.3 against 13.4-20.6 ms per member-epoch.
A plain one-model loop, whose tensors are small, makes no more faults in glibc's settings
(30 ms an epoch either way).
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 * 2**20
"""Blocks below this come from the heap, not ``mmap`` (glibc's largest; its default starts at 128 KiB)."""

TRIM_THRESHOLD = 256 * 2**20
"""Free memory at the top of the heap that is kept rather than given back to the kernel (default 128 KiB)."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_lock = threading.Lock()
_done: list[bool] = []


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed blocks of up to ``MMAP_THRESHOLD`` (once per process).

    The settings hold for the whole process: it keeps up to ``TRIM_THRESHOLD`` of free heap
    instead of handing it back. Elsewhere than glibc (macOS, musl) nothing changes.

    Returns:
        Whether glibc took the settings.
    """
    with _lock:
        if _done:
            return _done[0]
        ok = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(None)
                ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError) as exc:
                log.debug("mallopt unavailable: %s", exc)
        log.debug("malloc keeps freed blocks below %d bytes: %s", MMAP_THRESHOLD, ok)
        _done.append(ok)
        return ok
