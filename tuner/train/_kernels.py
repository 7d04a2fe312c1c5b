"""The fused optimizer step of batched training, compiled from C on first use (``_fused_step.c``).

Batched Adam with L1 and L2 took torch about fourteen passes over the weights a step: the L2 term,
the fused Adam kernel, then six operations for L1's proximal step, each over K members' stacked
weights (3.4 MB at K = 10 on digits' MLP 64-256-256-10, more than a core's cache). The C kernel
does it in one pass (``bench/kernels.py`` times both). It is built with the machine's C compiler
(``$CC``, else ``cc``) the first time a process needs it and kept, per source and CPU, in
``$REGTUNE_CACHE_DIR`` (default ``~/.cache/regtune``); later processes load the kept library.

Without a compiler, or with ``REGTUNE_KERNELS=0``, ``adam_l1_step`` is None and batched training
takes torch's path: the same numbers to float tolerance, more slowly. The log says which.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["FLAGS", "adam_l1_step", "kernel_library"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_fused_step.c")

FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-shared", "-fPIC"]
"""How the kernel is compiled: vectorized (sqrtf without errno), no FMA contraction (each operation rounds
as torch's do), plus ``-march=native`` on x86-64 and arm64 Linux, where the CPU's flags key the kept library."""

_lock = threading.Lock()
_loaded: list[Any] = []  # [the library or None], once per process


def _cpu_key() -> tuple[str, list[str]]:
    """What the compiled code depends on beyond its source: the machine, and ``-march=native`` where the
    CPU's feature flags can be read to key it."""
    machine = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return machine, []
    flags = sorted({line.split(":", 1)[1].strip() for line in info.splitlines()
                    if line.startswith(("flags", "Features"))})
    return machine + "\n" + "\n".join(flags), (["-march=native"] if flags else [])


def _cache_dir() -> Path:
    configured = os.environ.get("REGTUNE_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "regtune"


def _build(compiler: str, folder: Path) -> Path:
    """The library for this source and CPU in ``folder``, compiled there unless it already is.

    Raises:
        OSError, subprocess.SubprocessError: the folder cannot be written, or the compiler failed.
    """
    source = SOURCE.read_bytes()
    cpu, native = _cpu_key()
    flags = FLAGS + native
    key = hashlib.sha256(source + cpu.encode() + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    target = folder / f"fused_step-{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:  # built aside, then renamed: processes may race
        built = Path(tmp) / target.name
        subprocess.run([compiler, *flags, "-o", str(built), str(SOURCE), "-lm"], check=True, capture_output=True,
                       timeout=120)
        os.replace(built, target)
    return target


def kernel_library() -> Any | None:
    """The compiled kernel library (a ``ctypes.CDLL``), or None where it cannot be had; once per process."""
    with _lock:
        if _loaded:
            return _loaded[0]
        library = None
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if os.environ.get("REGTUNE_KERNELS", "1") == "0":
            log.info("batched training's fused optimizer step is off (REGTUNE_KERNELS=0): torch's operations")
        elif compiler is None:
            log.info("no C compiler ($CC, cc or gcc): batched training steps with torch's operations")
        else:
            try:
                path = _build(compiler, _cache_dir())
                library = ctypes.CDLL(str(path))
                fn = library.adam_l1_step
                fn.restype = None
                fn.argtypes = ([ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 3
                               + [ctypes.c_double] * 4)
                log.debug("batched training's fused optimizer step: %s", path)
            except (OSError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                log.warning("could not build batched training's fused optimizer step (%s%s): torch's operations "
                            "instead, slower", exc, ": " + detail.decode(errors="replace")[:500] if detail else "")
                library = None
        _loaded.append(library)
        return library


def adam_l1_step() -> Any | None:
    """The C function ``adam_l1_step`` (see ``_fused_step.c``), or None: use torch's operations."""
    library = kernel_library()
    return None if library is None else library.adam_l1_step
