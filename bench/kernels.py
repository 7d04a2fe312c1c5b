"""The kernel choices of batched training, timed against the forms they replaced, in one process.

    python bench/kernels.py [--k 10] [--rows 128] [--threads 2] [--repeats 300]

For the bench job's shapes (digits, MLP 64-256-256-10, batch 128, K members), each line prints the
median microseconds of the form ``tuner/train/_batched.py`` uses and of the one it replaced, and their
ratio (old / new):

- the output layer's products with weights stored (K, out, in) and its weight gradient as gᵀ·h,
  against (K, in, out) and autograd's hᵀ·g; and its outputs computed transposed, (K, out, rows);
- the softmax and the accuracy's argmax over the classes as a middle dimension (``_LastDense``'s
  outputs) against a last dimension of 10;
- a dropout mask made in float arithmetic from the draws' bits (``_mask``) against a comparison, its
  cast to float and the scaling; and five cohorts' masks, each written into its members' rows, against
  their draws spread to the members first (``cat`` of expanded views), then masked;
- a hidden layer's ReLU and dropout masks, and their gradient: the compiled kernels
  (``tuner/train/_kernels.py``, one pass each) against torch's operations;
- the optimizer step of K members with L1 and L2 (``_Stack._update``, Adam): the compiled kernel,
  one pass over each tensor, against torch's operations;
- a 256-wide hidden layer's three products (forward with the bias, the input's and the weights'
  gradients): ``tuner/train/_gemm.py``'s, OpenBLAS where it chose it, with torch at one thread and
  OpenBLAS at ``--threads`` as batched training runs them, against torch's at ``--threads``.

Each pair computes the same numbers (checked before timing; the optimizer step's to float tolerance).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from itertools import chain

import torch

import tuner.train._batched as _batched
from tuner import parse_spec
from tuner.knobs import Knobs
from tuner.train._batched import _cut, _mask, _SiteDrop, _Stack
from tuner.train._gemm import bmm, products, threads_for_products
from tuner.train._kernels import adam_l1_step, kernels
from tuner.train._memory import keep_freed_memory
from tuner.train._models import build_model


def _median_us(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def _pair(what: str, old: Callable[[], torch.Tensor], new: Callable[[], torch.Tensor], repeats: int,
          same: Callable[[torch.Tensor, torch.Tensor], bool] = torch.equal,
          new_inside: Callable[[], AbstractContextManager[None]] = nullcontext) -> None:
    """Check the two forms agree, then time each; ``new`` is timed inside ``new_inside()``."""
    assert same(old(), new()), f"{what}: the two forms differ"
    t_old = _median_us(old, repeats)
    with new_inside():
        t_new = _median_us(new, repeats)
    print(f"  {what:<58} {t_new:8.1f} us  (was {t_old:8.1f})  {t_old / t_new:5.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k", type=int, default=10, help="members in the batch")
    p.add_argument("--rows", type=int, default=128, help="rows per training batch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as batched training runs
    k, rows, n = args.k, args.rows, args.repeats
    gen = torch.Generator().manual_seed(0)
    print(f"K = {k}, {rows} rows, {args.threads} thread(s), median of {n}")

    h = torch.randn(k, rows, 256, generator=gen)
    w_in_out = torch.randn(k, 256, 10, generator=gen)
    w = w_in_out.transpose(1, 2).contiguous()  # (K, out, in)
    b = torch.randn(k, 1, 10, generator=gen)
    g = torch.randn(k, rows, 10, generator=gen)
    close = lambda a, c: torch.allclose(a, c, atol=1e-4)  # noqa: E731 -- a sum's order differs
    print("output layer, 256 -> 10")
    _pair("forward, outputs (K, out, rows)", lambda: torch.baddbmm(b, h, w_in_out),
          lambda: torch.baddbmm(b.transpose(1, 2), w, h.transpose(1, 2)).transpose(1, 2), n, close)
    _pair("weight gradient gT.h (K, out, in)", lambda: torch.bmm(h.transpose(1, 2), g).transpose(1, 2),
          lambda: torch.bmm(g.transpose(1, 2), h), n, close)

    out = torch.randn(k, 10, 1257, generator=gen)  # a split's outputs, classes in the middle
    last = out.transpose(1, 2).contiguous()
    print("loss and accuracy over 10 classes")
    _pair("log_softmax of a batch, classes in the middle", lambda: last[:, :rows].log_softmax(-1),
          lambda: out[:, :, :rows].log_softmax(1).transpose(1, 2), n, close)
    _pair("argmax of a split (max's indices), classes in the middle", lambda: last.argmax(-1),
          lambda: out.max(1).indices, n)

    print("dropout, a 256-wide site")
    bits = torch.empty(rows * 256 // 4, dtype=torch.int64).random_(-2**63, None, generator=gen)
    b16 = bits.view(torch.int16).view(rows, 256).float()
    uniforms = (b16 + 32768.0) * 2.0**-16
    rate = torch.linspace(0.05, 0.6, k).view(-1, 1, 1)
    scale = 1.0 / (1.0 - rate)
    cut = _cut(rate)
    _pair("mask: float arithmetic on the bits", lambda: (uniforms >= rate).to(torch.float32).mul_(scale),
          lambda: _mask([b16], (cut, scale)), n)
    cohorts = [b16 + c for c in range(5)]
    counts = [k // 5 + (c < k % 5) for c in range(5)]
    _pair("5 cohorts' masks, each into its members' rows",
          lambda: _mask([torch.cat([c.expand(m, -1, -1) for c, m in zip(cohorts, counts, strict=True)])],
                        (cut, scale)),
          lambda: _mask(cohorts, (cut, scale), counts), n)

    fns = kernels()
    if fns is not None:
        z = torch.randn(k, rows, 256, generator=gen)
        drop = _SiteDrop(fns, cohorts, counts, (cut, scale))
        masks = _mask(cohorts, (cut, scale), counts)

        def fused() -> torch.Tensor:
            out = z.clone()  # the layer's fresh product in training: here a copy, which this form pays
            drop.relu_dropout_(out)
            return out
        _pair("ReLU and 5 cohorts' masks on a product (the kernel, in place)",
              lambda: torch.relu(z) * _mask(cohorts, (cut, scale), counts), fused, n)
        out, g = fused(), torch.randn(k, rows, 256, generator=gen)
        _pair("their gradient (the kernel)",
              lambda: torch.ops.aten.threshold_backward(g * masks, torch.relu(z), 0.0), lambda: drop.grad(g, out), n)

    print("optimizer step, Adam with L1 and L2, MLP 64-256-256-10")
    _optimizer_pair(k, n)

    print("hidden layer 256 -> 256, products")
    _products(k, rows, n)


def _products(k: int, rows: int, repeats: int) -> None:
    blas = products()
    if blas is None:
        print("  torch's products here (tuner/train/_gemm.py: REGTUNE_GEMM or the CPU): nothing to compare")
        return
    gen = torch.Generator().manual_seed(1)
    h, g = torch.randn(k, rows, 256, generator=gen), torch.randn(k, rows, 256, generator=gen)
    w, b = torch.randn(k, 256, 256, generator=gen), torch.randn(k, 1, 256, generator=gen)
    close = lambda a, c: torch.allclose(a, c, rtol=1e-4, atol=1e-3)  # noqa: E731 -- a sum's order differs
    on = f" (OpenBLAS {blas.core})"
    _pair("forward h.WT + b" + on, lambda: torch.baddbmm(b, h, w.transpose(1, 2)),
          lambda: bmm(h, w.transpose(1, 2), b), repeats, close, threads_for_products)
    _pair("input gradient g.W" + on, lambda: torch.bmm(g, w), lambda: bmm(g, w), repeats, close,
          threads_for_products)
    _pair("weight gradient gT.h" + on, lambda: torch.bmm(g.transpose(1, 2), h), lambda: bmm(g.transpose(1, 2), h),
          repeats, close, threads_for_products)


def _optimizer_pair(k: int, repeats: int) -> None:
    """``_Stack._update`` with the compiled kernel and with torch's operations, from the same state."""
    if adam_l1_step() is None:
        print("  no compiled kernel here (see tuner/train/_kernels.py): nothing to compare")
        return
    spec = parse_spec({"name": "k", "dataset": {"source": "sklearn", "name": "digits"},
                       "model": {"kind": "mlp", "hidden": [256, 256]}, "training": {"optimizer": "adam"},
                       "search": {"space": {"l2": {"low": 1e-6, "high": 1e-2, "log": True}}}})
    gen = torch.Generator().manual_seed(1)
    base = build_model(spec.model, 64, 10, gen)
    stacks = []
    for _ in range(2):
        stack = _Stack(base, spec.training, "classification")
        stack.resize([], [Knobs(l1=10.0 ** -(2 + i % 4), l2=10.0 ** -(3 + i % 3)) for i in range(k)])
        with torch.no_grad():
            for p, m, v in zip(stack.params, *stack.moments, strict=True):
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
                m.copy_(torch.randn(p.shape, generator=gen) * 1e-3)
                v.copy_(torch.rand(p.shape, generator=gen) * 1e-6)
                p.grad = torch.randn(p.shape, generator=gen) * 1e-3
        stack.steps += 40
        stacks.append(stack)
    with torch.no_grad():  # the same state in both
        for a, b in zip(chain(stacks[0].params, *stacks[0].moments), chain(stacks[1].params, *stacks[1].moments),
                        strict=True):
            b.copy_(a)
        for a, b in zip(stacks[0].params, stacks[1].params, strict=True):
            assert a.grad is not None
            b.grad = a.grad.clone()

    def step(stack: _Stack, fused: bool) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.no_grad():
                if fused:
                    stack._update()
                else:
                    _batched.adam_l1_step, kept = (lambda: None), _batched.adam_l1_step
                    try:
                        stack._update()
                    finally:
                        _batched.adam_l1_step = kept
            return torch.cat([p.detach().flatten() for p in stack.params])
        return run

    _pair("one step, the fused kernel", step(stacks[0], False), step(stacks[1], True), repeats,
          lambda a, c: torch.allclose(a, c, atol=1e-6) and torch.equal(a == 0, c == 0))


if __name__ == "__main__":
    main()
