"""Batched training's compiled kernels (``_kernels.c``), built from C on first use.

- ``adam_l1_step``: Adam with L2's gradient and L1's proximal step. Torch took about fourteen passes
  over K members' stacked weights a step (the L2 term, the fused Adam kernel, six operations for the
  proximal step; 3.4 MB at K = 10 on digits' MLP 64-256-256-10, more than a core's cache); this, one.
- ``relu_dropout`` and ``relu_dropout_grad``: a hidden layer's ReLU and dropout mask in place on its
  product, and their gradient, one pass each. Torch took six passes forward (the ReLU, the mask from
  the bits in four, the product with it) and two backward.

``bench/kernels.py`` times each against torch's operations. The library is built with the machine's
C compiler (``$CC``, else ``cc``) the first time a process needs it and kept, per source and CPU, in
``$REGTUNE_CACHE_DIR`` (default ``~/.cache/regtune``); later processes load the kept library.

Without a compiler, or with ``REGTUNE_KERNELS=0``, ``kernels()`` is None and batched training takes
torch's operations: the same numbers (to float tolerance for Adam's), more slowly. The log says which.
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
from typing import Any, NamedTuple

__all__ = ["FLAGS", "Kernels", "adam_l1_step", "kernels"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_kernels.c")

FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-shared", "-fPIC"]
"""How the kernels are compiled: vectorized (sqrtf without errno), no FMA contraction (each operation rounds
as torch's do), plus ``-march=native`` where ``/proc/cpuinfo`` lists the CPU's flags, which then key the kept
library."""

_lock = threading.Lock()
_loaded: list[Kernels | None] = []  # once per process


class Kernels(NamedTuple):
    """The library's functions, their argument types set (see ``_kernels.c``)."""

    adam_l1_step: Any
    relu_dropout: Any
    relu_dropout_grad: Any


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
    """``$REGTUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/regtune``, else ``~/.cache/regtune``; without a home (a
    container's user with no passwd entry), a folder in the temporary directory."""
    if configured := os.environ.get("REGTUNE_CACHE_DIR"):
        return Path(configured)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "regtune"
    try:
        return Path.home() / ".cache" / "regtune"
    except RuntimeError:  # Path.home() found neither $HOME nor the user's passwd entry
        return Path(tempfile.gettempdir()) / "regtune-cache"


def _build(compiler: str, folder: Path) -> Path:
    """The library for this source and CPU in ``folder``, compiled there unless it already is.

    Raises:
        OSError, subprocess.SubprocessError: the folder cannot be written, or the compiler failed.
    """
    source = SOURCE.read_bytes()
    cpu, native = _cpu_key()
    flags = FLAGS + native
    key = hashlib.sha256(source + cpu.encode() + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    target = folder / f"kernels-{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:  # built aside, then renamed: processes may race
        built = Path(tmp) / target.name
        subprocess.run([compiler, *flags, "-o", str(built), str(SOURCE), "-lm"], check=True, capture_output=True,
                       timeout=120)
        os.replace(built, target)
    return target


def kernels() -> Kernels | None:
    """The compiled kernels, or None where they cannot be had (use torch's operations); once per process."""
    with _lock:
        if _loaded:
            return _loaded[0]
        loaded = None
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if os.environ.get("REGTUNE_KERNELS", "1") == "0":
            log.info("batched training's compiled kernels are off (REGTUNE_KERNELS=0): torch's operations")
        elif compiler is None:
            log.info("no C compiler ($CC, cc or gcc): batched training runs torch's operations")
        else:
            try:
                path = _build(compiler, _cache_dir())
                library = ctypes.CDLL(str(path))
                loaded = Kernels(library.adam_l1_step, library.relu_dropout, library.relu_dropout_grad)
                ptr, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
                loaded.adam_l1_step.argtypes = [ptr] * 4 + [i64] * 2 + [ptr] * 3 + [f64] * 4
                loaded.relu_dropout.argtypes = [ptr, i64, i64, ptr, ptr, ptr, ptr]
                loaded.relu_dropout_grad.argtypes = [ptr, ptr, ptr, i64, i64, ptr]
                for fn in loaded:
                    fn.restype = None
                log.debug("batched training's compiled kernels: %s", path)
            except (OSError, AttributeError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                log.warning("could not build batched training's compiled kernels (%s%s): torch's operations "
                            "instead, slower", exc, ": " + detail.decode(errors="replace")[:500] if detail else "")
                loaded = None
        _loaded.append(loaded)
        return loaded


def adam_l1_step() -> Any | None:
    """The C function ``adam_l1_step`` (see ``_kernels.c``), or None: use torch's operations."""
    found = kernels()
    return None if found is None else found.adam_l1_step
