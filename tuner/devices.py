"""Where training runs: ``training.device`` (auto, cpu, cuda, cuda:N, mps) and what this machine can see.

The spec names a device; this module says whether it is there (checked at submit, so a job asking
for a GPU that is not visible is refused, never half-run) and which one ``auto`` means here.
"""

from __future__ import annotations

import re

import torch

__all__ = ["DEVICE_PATTERN", "device_problem", "resolve_device"]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps() -> bool:
    return bool(torch.backends.mps.is_available())


def device_problem(device: str, precision: str) -> tuple[str, str] | None:
    """(field, why) when this machine cannot train on ``device`` at ``precision``; None when it can."""
    count = _cuda_count()
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if count == 0:
            return "training.device", f"asks for {device!r}, but no CUDA device is visible here " \
                                      "(torch.cuda.is_available() is False); use auto or cpu"
        if index >= count:
            return "training.device", f"asks for {device!r}, but only {count} CUDA device(s) are visible " \
                                      f"(cuda:0 to cuda:{count - 1})"
    if device == "mps" and not _mps():
        return "training.device", "asks for 'mps', but no Apple GPU is visible here; use auto or cpu"
    if precision == "fp16" and resolve_device(device).type == "cpu":
        return "training.precision", f"fp16 needs a GPU, but training.device {device!r} means the CPU here; " \
                                     "use bf16 or fp32"
    return None


def resolve_device(device: str) -> torch.device:
    """The torch device ``training.device`` means on this machine (``auto``: the first GPU, else the CPU)."""
    if device != "auto":
        return torch.device(device)
    if _cuda_count():
        return torch.device("cuda")
    return torch.device("mps") if _mps() else torch.device("cpu")
