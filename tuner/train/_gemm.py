"""Batched training's products through OpenBLAS's AVX-512 kernels, where torch's MKL leaves them unused.

Torch's BLAS on x86 is MKL, and MKL runs its AVX2 code on CPUs that are not Intel's. On an AMD EPYC with
AVX-512 (2 cores), K = 10 members' (128, 256) x (256, 256) products took 0.95-1.0 ms in ``torch.bmm``
and 0.44-0.58 ms in OpenBLAS's SkylakeX kernels (``scipy-openblas32``'s library, its
``cblas_sgemm_batch_strided``), the same arithmetic. Ten members trained for 10 epochs on digits (MLP
64-256-256-10) in 0.47-0.52 s against 0.79-0.82, and ``bench/search_speed.py``'s search ran at 100-123 epochs/s
against 67-103 with ``REGTUNE_GEMM=torch``, in alternate runs.

- ``products()``: the library, or None (use torch's products). ``REGTUNE_GEMM``: ``auto`` (the default:
  OpenBLAS on a CPU that is not Intel's and has AVX-512, where its kernels are told to be SkylakeX's),
  ``openblas`` (wherever the library loads, its own choice of kernels unless AVX-512 is there), ``torch``.
- ``bmm(a, b, bias)``: a·b (+ bias) per member, as ``torch.bmm``/``torch.baddbmm`` with ``beta=1``; operands
  may be transposed views or a shared matrix expanded over the members.
- ``threads_for_products()``: around a batched training (``with_product_threads``, its decorator). OpenBLAS's
  threads and torch's OpenMP threads must not both run: on 2 cores, with both at 2 threads, a product beside
  torch's small operations took 13 ms instead of 0.5 (each pool's waiting threads spin on the cores the other
  needs). So while it trains, the calling thread's torch threads are 1 and OpenBLAS gets the count they had.

Results agree with torch's to float rounding (the products sum in another order); with
``REGTUNE_GEMM=torch`` every product is torch's.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import platform
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import torch

__all__ = ["bmm", "products", "threads_for_products", "with_product_threads"]

log = logging.getLogger(__name__)

ENV = "REGTUNE_GEMM"
AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"}  # what OpenBLAS's SkylakeX kernels use
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

_P = ParamSpec("_P")
_R = TypeVar("_R")

_lock = threading.Lock()
_loaded: list[_Blas | None] = []  # once per process


class _Blas:
    """The loaded library's batched product and thread count, their argument types set."""

    def __init__(self, library: ctypes.CDLL) -> None:
        i32, f32, ptr = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        self.gemm = library.scipy_cblas_sgemm_batch_strided
        # order, transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, count
        self.gemm.argtypes = [i32] * 6 + [f32, ptr, i32, i32, ptr, i32, i32, f32, ptr, i32, i32, i32]
        self.gemm.restype = None
        self.set_threads = library.scipy_openblas_set_num_threads
        self.set_threads.argtypes, self.set_threads.restype = [i32], None
        corename = library.scipy_openblas_get_corename
        corename.restype = ctypes.c_char_p
        self.core = (corename() or b"?").decode()
        self.threads = 0


def _cpu() -> tuple[str, set[str]]:
    """The CPU's vendor and feature flags, from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", set()
    vendor, flags = "", set[str]()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return vendor, flags


def _load(coretype: str | None) -> _Blas:
    """``scipy-openblas32``'s library, its kernels ``coretype``'s where given.

    OpenBLAS reads ``OPENBLAS_CORETYPE`` as it loads, so it is set for that moment (numpy's own OpenBLAS,
    loaded already, keeps what the environment says). The library is loaded without importing the
    package, whose import loads it into the process's global namespace, before the variable could be set.

    Raises:
        ImportError, OSError, AttributeError: the package, its library or a function is missing.
    """
    found = importlib.util.find_spec("scipy_openblas32")
    if found is None or not found.submodule_search_locations:
        raise ImportError("scipy-openblas32 is not installed")
    path = Path(next(iter(found.submodule_search_locations))) / "lib" / "libscipy_openblas.so"
    before = os.environ.get("OPENBLAS_CORETYPE")
    if coretype is not None:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        return _Blas(ctypes.CDLL(str(path)))
    finally:
        if before is None:
            os.environ.pop("OPENBLAS_CORETYPE", None)
        else:
            os.environ["OPENBLAS_CORETYPE"] = before


def products() -> _Blas | None:
    """OpenBLAS for batched training's products, or None: torch's (see the module's docstring)."""
    if _loaded:  # every product asks: no lock once the choice is made
        return _loaded[0]
    with _lock:
        if _loaded:
            return _loaded[0]
        choice = os.environ.get(ENV, "auto").strip().lower()
        vendor, flags = _cpu()
        avx512 = flags >= AVX512
        loaded: _Blas | None = None
        if choice not in ("auto", "openblas", "torch"):
            log.warning("%s=%s is not auto, openblas or torch: torch's products", ENV, choice)
        elif choice == "torch":
            log.info("batched training's products: torch's (%s=torch)", ENV)
        elif platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
            log.info("batched training's products: torch's (OpenBLAS's are used on x86-64 Linux only)")
        elif choice == "auto" and (vendor == "GenuineIntel" or not avx512):
            log.info("batched training's products: torch's (%s CPU, AVX-512 %s)", vendor or "unknown",
                     "present" if avx512 else "absent")
        else:
            try:
                loaded = _load("SkylakeX" if avx512 else None)
                log.info("batched training's products: OpenBLAS, %s kernels", loaded.core)
            except (ImportError, OSError, AttributeError) as exc:
                log.warning("batched training's products: torch's (OpenBLAS could not be loaded: %s)", exc)
        _loaded.append(loaded)
        return loaded


@contextmanager
def threads_for_products() -> Iterator[None]:
    """While OpenBLAS computes the products: the calling thread's torch threads 1, OpenBLAS's what they were.

    Torch's thread count is the calling thread's own; OpenBLAS's is the process's, so workers that train
    side by side set the same count (their share of the cores).
    """
    blas = products()
    if blas is None:
        yield
        return
    threads = torch.get_num_threads()
    if blas.threads != threads:
        blas.set_threads(threads)
        blas.threads = threads
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def with_product_threads(train: Callable[_P, _R]) -> Callable[_P, _R]:
    """``train`` run inside ``threads_for_products()``."""
    @wraps(train)
    def training(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with threads_for_products():
            return train(*args, **kwargs)
    return training


def _operand(t: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """``t`` (count, rows, cols) as BLAS reads it: (the tensor, transposed, leading dimension, batch stride).

    A matrix stored row by row is read as it is, one stored column by column (a transposed view) as the
    transpose of its storage; anything else is copied first.
    """
    count, rows, cols = t.shape
    s0, s1, s2 = t.stride()
    if s2 == 1 and s1 >= max(1, cols):
        return t, _NO_TRANS, s1, s0 if count > 1 else 0
    if s1 == 1 and s2 >= max(1, rows):
        return t, _TRANS, s2, s0 if count > 1 else 0
    t = t.contiguous()
    return t, _NO_TRANS, max(1, cols), rows * cols


def _blas_takes(*tensors: torch.Tensor | None) -> bool:
    """Whether OpenBLAS can compute with these: CPU float32 of fewer than 2³¹ elements (its int sizes), none
    needing a gradient through this call (batched training calls ``bmm`` inside its autograd functions)."""
    grad = torch.is_grad_enabled()
    return all(t is None or (t.dtype == torch.float32 and t.device.type == "cpu" and t.numel() < 2**31
                             and not (grad and t.requires_grad)) for t in tensors)


def bmm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.bmm(a, b)``, or ``torch.baddbmm(bias, a, b)`` where ``bias`` broadcasts to the result.

    OpenBLAS computes it where ``products()`` has it and it can take the operands (``_blas_takes``); torch
    otherwise.
    """
    blas = products()
    count, m, inner = a.shape
    n = b.shape[2]
    if (blas is None or 0 in (count, m, n, inner) or b.shape[:2] != (count, inner) or count * m * n >= 2**31
            or not _blas_takes(a, b, bias)):
        return torch.bmm(a, b) if bias is None else torch.baddbmm(bias, a, b)
    if bias is None:
        out, beta = torch.empty(count, m, n), 0.0
    else:
        out, beta = bias.expand(count, m, n).contiguous(), 1.0
    a, trans_a, lda, stride_a = _operand(a)
    b, trans_b, ldb, stride_b = _operand(b)
    blas.gemm(_ROW_MAJOR, trans_a, trans_b, m, n, inner, 1.0, a.data_ptr(), lda, stride_a,
              b.data_ptr(), ldb, stride_b, beta, out.data_ptr(), n, m * n, count)
    return out
