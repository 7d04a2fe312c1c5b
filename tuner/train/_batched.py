"""K configurations of one architecture, trained as one batched network.

The knobs regtune searches (λ₁, λ₂, dropout, label smoothing) change the loss,
the masks and the update, never the shapes, so K trials of one model can share
every kernel: weights stacked as (K, out, in), one ``baddbmm`` per layer for all
members (the input batch they share broadcast to each). Each member trains exactly as it would
alone in ``tuner.train.train`` with the same seed: the same init and batch
order (one generator, as the lone loop draws it), the same dropout masks (the
lone loop draws each site's masks from its own stream, so one draw per site
serves every member), the same optimizer arithmetic (Adam and SGD are
elementwise; AdamW's decoupled decay is applied per member). Its losses match
the lone run to float tolerance.

A member that stops (early stopping, pruning, a NaN, a cancel, an error in its
callback) leaves the batch: its slices are dropped from the weights and the
optimizer state, so it costs nothing afterwards, and the caller may refill its
place with the next trial at that epoch boundary. A member that joins later
starts a cohort of its own: its own batch order and dropout streams, drawn from
the start as its lone run would draw them, and its own optimizer step count.
"""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from typing import Any, Protocol

import torch

from tuner.errors import Cancelled, TrialFailed
from tuner.knobs import Knobs
from tuner.spec import ModelSpec, TrainingSpec
from tuner.train._data import Dataset, Split
from tuner.train._gemm import bmm, with_product_threads
from tuner.train._kernels import Kernels, adam_l1_step, kernels
from tuner.train._loop import STOP_POLL_S, EpochCallback, TrainResult, check_finite, kept_train_measure
from tuner.train._memory import keep_freed_memory
from tuner.train._models import MLP, build_model, dropout_bits, dropout_generators
from tuner.train._regularizers import features_kept_mask, sparsity

__all__ = ["MemberOutcome", "auto_batch", "close_epoch", "n_weights", "train_batched"]

MemberOutcome = TrainResult | Exception
"""How a member ended: its measurements, or the exception that stopped it, as ``train`` would have raised it."""

_Measure = tuple[float, float | None]  # (plain loss, accuracy or None)


@dataclass(eq=False)  # compared and hashed by identity: each cohort is its own
class _Cohort:
    """Members that joined the batch together: they share an epoch count, a batch order and dropout bits.

    A lone run draws its init, then each epoch's batch order, from one generator seeded with the
    job's seed, and each dropout site's masks from a stream of its own; every trial of a job shares
    that seed, so one cohort's draws serve all its members exactly as each would draw them alone.
    Its dropout bits are its epoch's in ``_SiteBits``, which every cohort shares.
    """

    gen: torch.Generator
    epoch: int = 0  # epochs finished
    order: torch.Tensor | None = None  # this epoch's batch order


class _SiteBits:
    """One dropout site's bits (``dropout_bits``), epoch by epoch, as every member draws them alone.

    A lone run draws a site's masks from a stream of its own (``dropout_generators``), seeded by the
    job's seed: a member's e-th epoch has the same bits whichever cohort it joined with. The first
    cohort to reach an epoch draws the epoch's bits, and the cohorts that reach it later take them
    from here: at K = 10 in a search, six or seven cohorts each drew their own, about 6 % of the
    search. Epochs are kept up to
    ``BITS_KEPT_BYTES`` for all sites together; past that, an epoch is drawn again from the stream's
    state at its start, which is kept for every epoch.
    """

    def __init__(self, gen: torch.Generator, width: int, rows: list[int], room: list[int]) -> None:
        self.width, self.rows, self.room = width, rows, room  # room: bytes left to keep, shared by the sites
        self.states = [gen.get_state()]  # states[e]: the stream at the start of epoch e (0-based)
        self.kept: dict[int, list[torch.Tensor]] = {}

    def epoch(self, e: int) -> list[torch.Tensor]:
        """Each batch's bits (rows, width) in epoch ``e`` (0-based)."""
        if e in self.kept:
            return self.kept[e]
        while len(self.states) <= e:  # the stream's state at e's start: draw the epochs before it
            self._draw(len(self.states) - 1)
        return self._draw(e)

    def _draw(self, e: int) -> list[torch.Tensor]:
        gen = torch.Generator()
        gen.set_state(self.states[e])
        out = [dropout_bits((r, self.width), gen) for r in self.rows]
        if len(self.states) == e + 1:
            self.states.append(gen.get_state())
        size = sum(b.nbytes for b in out)
        if size <= self.room[0]:
            self.room[0] -= size
            self.kept[e] = out
        return out


ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
"""Adam's betas and ε: torch's defaults, which the lone loop's ``torch.optim.Adam`` uses."""

BITS_KEPT_BYTES = 2**28
"""Dropout bits ``train_batched`` keeps for the cohorts that reach an epoch later (``_SiteBits``): on digits
with two 256-unit sites, 2.6 MB an epoch."""


@dataclass
class _Member:
    index: int  # position in the caller's list
    knobs: Knobs
    on_epoch: EpochCallback | None
    cohort: _Cohort
    curve_t: list[float] = field(default_factory=list)
    curve_v: list[float] = field(default_factory=list)
    best: tuple[float, int] = (math.inf, 0)  # val loss, epoch
    best_state: list[torch.Tensor] | None = None
    best_measures: tuple[_Measure | None, _Measure] = (None, (0.0, None))  # train's None: not measured yet
    seconds: float = 0.0  # its share of the batch's time


class _Closing(Protocol):
    """What ``close_epoch`` reads and keeps of a member (the stacked and the vmapped trainers' own)."""

    on_epoch: EpochCallback | None
    curve_t: list[float]
    curve_v: list[float]
    best: tuple[float, int]
    best_state: Any
    best_measures: tuple[_Measure | None, _Measure]


def close_epoch(m: _Closing, epoch: int, tr: _Measure | None, va: _Measure, patience: int | None,
                min_delta: float, state: Callable[[], Any]) -> Exception | bool:
    """One member's epoch boundary, as ``train`` closes an epoch: the NaN check, its curves, its callback,
    its best epoch (``state()`` saved there when early stopping may go back to it) and early stopping.

    ``tr`` is None where the train loss is not measured at every epoch (``train_curve=False``): the member's
    result measures it from the weights it keeps (``kept_train_measure``).

    Returns:
        The exception that ends the member (a non-finite loss, or what its callback raised: pruned, cancelled,
        a bug), True when early stopping ends it (its result is due), False when it trains on.
    """
    try:
        check_finite(epoch, tr, va)
    except TrialFailed as exc:
        return exc
    if tr is not None:
        m.curve_t.append(tr[0])
    m.curve_v.append(va[0])
    if m.on_epoch is not None:
        try:
            m.on_epoch(epoch, None if tr is None else tr[0], va[0])
        except Exception as exc:  # pruned, cancelled, or a bug: this member stops, the others go on
            return exc
    if va[0] < m.best[0] - min_delta or patience is None:
        m.best = (va[0], epoch)
        m.best_measures = (tr, va)
        if patience is not None:
            m.best_state = state()
        return False
    return epoch - m.best[1] >= patience


def n_weights(model_spec: ModelSpec, n_in: int, n_out: int) -> int:
    """The model's weight count: its multiply-adds per example and layer pass."""
    return sum(a * b for a, b in pairwise([n_in, *(model_spec.hidden or []), n_out]))


def auto_batch(model_spec: ModelSpec, n_in: int, n_out: int, trials: int, cores: int) -> int:
    """How many trials to train together: enough to fill the cores, few enough that the sampler learns.

    Small models leave a core mostly waiting on Python and dispatch, so they batch
    many; a model whose layers already fill the cores gains little and batches few.
    A stage is asked in at least four rounds, so a model-based sampler still sees
    results before it proposes most of its trials.

    Args:
        cores: the cores one worker may use (the machine's cores over ``search.parallelism``).
    """
    by_size = max(1, min(32, round(4 * cores * 2**17 / max(n_weights(model_spec, n_in, n_out), 1))))
    return max(1, min(by_size, math.ceil(trials / 4)))


class _Stack:
    """The live members' parameters, stacked on a leading member axis, and their optimizer state.

    The optimizer is regtune's own, member by member: Adam's bias correction counts each member's
    steps (a member that joins later starts at step 0), which one ``torch.optim.Adam`` over the
    stacked tensors cannot. Its arithmetic is torch's (Adam's fused kernel, run per cohort; AdamW's
    decay and SGD with momentum as the single-tensor code does them), so each member's weights
    follow its lone run to float tolerance. Adam, with λ₂'s gradient and L1's proximal step, takes
    one pass over each tensor where the compiled kernel (``_kernels``) can be had: the same formulas
    in 0.60-0.68 ms a step at K = 10 on the bench job, against 1.04 for torch's operations (``bench/kernels.py``).
    """

    def __init__(self, base: MLP, spec: TrainingSpec, task: str) -> None:
        self.act = base.act
        self.relu = type(base.act) is torch.nn.ReLU
        self.n_hidden = len(base.hidden)
        self.spec, self.task = spec, task
        with torch.no_grad():  # one member's start: every member's, since they share the seed
            self.init = [lin.weight.detach().unsqueeze(0).clone() for lin in base.linears] + [
                lin.bias.detach().view(1, 1, -1).clone() for lin in base.linears]
        self.n_layers = len(base.linears)
        self.params: list[torch.Tensor] = [p[:0].clone().requires_grad_() for p in self.init]
        self.adam = spec.optimizer in ("adam", "adamw")
        self.moments: list[list[torch.Tensor]] = [[p[:0].clone() for p in self.init]
                                                  for _ in range(2 if self.adam else 1)]
        self.steps = torch.zeros(0, 1, 1, dtype=torch.float64)
        self.knobs: list[Knobs] = []
        self._runs: _Runs | None = None  # Adam's runs of members, made at the first step after a resize

    @property
    def weights(self) -> list[torch.Tensor]:
        return self.params[:self.n_layers]

    @property
    def biases(self) -> list[torch.Tensor]:
        return self.params[self.n_layers:]

    def _select(self, idx: torch.Tensor, add: int) -> None:
        """Keep the members at ``idx``, then append ``add`` fresh ones (the initial weights, no optimizer state)."""
        with torch.no_grad():
            self.params = [torch.cat([p.detach()[idx], i.expand(add, -1, -1)]).requires_grad_()
                           for p, i in zip(self.params, self.init, strict=True)]
            self.moments = [[torch.cat([m[idx], torch.zeros_like(i).expand(add, -1, -1)])
                             for m, i in zip(ms, self.init, strict=True)] for ms in self.moments]
            self.steps = torch.cat([self.steps[idx], torch.zeros(add, 1, 1, dtype=torch.float64)])
        self._runs = None

    def resize(self, keep: list[int], joining: list[Knobs]) -> None:
        """Keep the members at positions ``keep`` and add one fresh member per entry of ``joining``."""
        self._select(torch.tensor(keep, dtype=torch.long), len(joining))
        self.knobs = [self.knobs[p] for p in keep] + list(joining)
        self._set_knobs()

    def _set_knobs(self) -> None:
        """Per-member knobs as tensors that broadcast over the member axis."""
        def col(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)

        knobs = self.knobs
        self.l1 = col([k.l1 for k in knobs]) if any(k.l1 > 0 for k in knobs) else None
        l2 = [k.l2 for k in knobs]
        # 2λ₂, the penalty's gradient per unit weight (Adam and SGD; AdamW decays instead)
        self.l2_grad = 2.0 * col(l2) if any(l2) and self.spec.optimizer != "adamw" else None
        # AdamW's decoupled decay, w ← w·(1 − lr·2λ₂), one factor per member as torch applies it per group
        self.decay = (1.0 - self.spec.lr * 2.0 * col(l2)) if any(l2) and self.spec.optimizer == "adamw" else None
        self.smoothing = (torch.tensor([k.label_smoothing for k in knobs]).view(-1, 1)
                          if any(k.label_smoothing > 0 for k in knobs) else None)
        rates = [[k.input_dropout for k in knobs]] + [[k.dropout[i] if i < len(k.dropout) else 0.0 for k in knobs]
                                                       for i in range(self.n_hidden)]
        # per site: the bits b of a uniform (``dropout_bits``) keep a unit where b > τ (``_cut``), scaled by
        # 1/(1-p); None where no member drops there
        self.keep: list[tuple[torch.Tensor, torch.Tensor] | None] = [
            (_cut(col(p)), 1.0 / (1.0 - col(p))) if any(v > 0 for v in p) else None for p in rates]

    def forward(self, x: torch.Tensor, bits: Sequence[list[torch.Tensor] | None] = (),
                counts: list[int] | None = None) -> torch.Tensor:
        """The members' outputs (K, out, rows), outputs before rows, for the input ``x``; ``bits`` per
        dropout site (``dropout_bits``), one (rows, width) per cohort, whose members ``counts`` says
        (None: one cohort).

        ``x`` is (rows, in) when every member sees the same rows, else (K, rows, in). The outputs come
        out transposed (``_LastDense``) because a softmax over a last dimension of 10 classes is slow:
        100 µs for (10, 128, 10), 6 µs over the middle dimension of (10, 10, 128).
        """
        h = x
        grad = torch.is_grad_enabled()
        in_place = self.relu and not grad  # evaluating: no graph keeps the pre-activations
        if (site := self.keep[0]) is not None and bits and bits[0] is not None:
            h = h * _mask(bits[0], site, counts)  # (K, rows, in): masks differ
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if h.dim() == 2:  # the input every member shares
                h = h.expand(w.shape[0], -1, -1)
            if j == self.n_hidden:  # the output layer
                return _LastDense.apply(h, w, b) if grad else _LastDense.product(h, w, b)
            site, u = self.keep[j + 1], bits[j + 1] if bits else None
            if grad and self.relu and site is not None and u is not None and (fns := kernels()) is not None:
                h = _ReluDropDense.apply(h, w, b, _SiteDrop(fns, u, counts, site))  # one pass each way
                continue
            h = _Dense.apply(h, w, b) if grad else _Dense.product(h, w, b)
            h = h.relu_() if in_place else self.act(h)
            if site is not None and u is not None:
                h = h * _mask(u, site, counts)
        raise AssertionError("an MLP's last layer is its output layer")

    def losses(self, out: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor | None = None) -> torch.Tensor:
        """Each member's mean loss (K,) from its outputs (K, out, rows): cross-entropy with its own smoothing,
        or squared error.

        ``y`` is (rows,) when every member sees the same rows, else (K, rows).
        """
        if self.task != "classification":
            return (out.squeeze(1) - y).pow(2).mean(-1)
        logp = out.log_softmax(1)
        index = y.view(1, 1, -1).expand(out.shape[0], 1, -1) if y.dim() == 1 else y.unsqueeze(1)
        nll = -logp.gather(1, index).squeeze(1)
        if smoothing is None:
            return nll.mean(-1)
        return ((1.0 - smoothing) * nll - smoothing * logp.mean(1)).mean(-1)

    def train_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss per member, with its own smoothing; λ₂'s gradient is added in ``step``."""
        return self.losses(out, y, self.smoothing)

    def step(self, total: torch.Tensor) -> None:
        """One optimizer step for every member, then L1's proximal step."""
        for p in self.params:
            p.grad = None
        total.backward()
        with torch.no_grad():
            self._update()

    def _update(self) -> None:
        spec = self.spec
        grads = [p.grad for p in self.params]
        assert all(g is not None for g in grads)
        if self.adam and self.decay is None and (fused := adam_l1_step()) is not None and all(
                g is not None and g.is_contiguous() and g.dtype == torch.float32 and g.device.type == "cpu"
                for g in grads):  # the kernel reads CPU float32 memory, member after member
            self.steps += 1
            self._adam_fused(fused)
            self._runs = None  # ``_adam``'s counts were not kept up: it rebuilds them from ``steps`` if it runs
            return
        if self.l2_grad is not None:  # d(λ₂·Σw²)/dw, added as the lone loop's autograd adds it
            for w in self.weights:
                assert w.grad is not None
                w.grad.addcmul_(w, self.l2_grad)
        self.steps += 1
        if self.decay is not None:
            for w in self.weights:
                w.mul_(self.decay)
        if self.adam:
            self._adam()
            return
        for p, buf in zip(self.params, self.moments[0], strict=True):
            g = p.grad
            assert g is not None
            if spec.momentum:
                buf.mul_(spec.momentum).add_(g)  # from zero: torch's first step, buf = g, exactly
                g = buf
            p.add_(g, alpha=-spec.lr)
        if self.l1 is not None:  # soft-threshold by each member's λ₁ times the step size (``prox_l1_``'s rule)
            threshold = spec.lr * self.l1
            for w in self.weights:
                _soft_threshold_(w, threshold)

    def _adam(self) -> None:
        """Torch's Adam, one bias correction per member, then L1's proximal step.

        Torch's fused Adam kernel (``torch.optim.Adam(fused=True)``'s) updates each run of members that
        share a step count (a cohort: its members sit together, in joining order) with that count: one
        pass over each tensor instead of eight (4x faster at K = 10). L1's threshold is λ₁ times Adam's
        per-weight step, lr / (√(v/(1−β₂ᵗ)) + ε) (``prox_l1_``'s rule).
        """
        (beta1, beta2), lr = ADAM_BETAS, self.spec.lr
        if self._runs is None:
            self._runs = _Runs.of(self.steps, self.params, self.moments)
        else:  # the members' counts went up by one (``_update``): so do their runs'
            torch._foreach_add_(self._runs.counts, 1.0)
        runs = self._runs
        grads: list[torch.Tensor] = []
        for p in self.params:
            assert p.grad is not None
            grads.extend(p.grad.split_with_sizes(runs.sizes))  # the method, without Tensor.split's Python wrapper
        torch._fused_adam_(runs.params, grads, runs.m, runs.v, [], runs.steps, lr=lr, beta1=beta1, beta2=beta2,
                           weight_decay=0.0, eps=ADAM_EPS, amsgrad=False, maximize=False)
        if self.l1 is None:
            return
        # λ₁·lr / (√v / c₂ + ε) = λ₁·lr·c₂ / (√v + ε·c₂): six passes over each weight tensor, two of them in place
        correction2_sqrt = (1.0 - beta2 ** self.steps).sqrt().float()
        l1_steps, eps = lr * self.l1 * correction2_sqrt, ADAM_EPS * correction2_sqrt
        for w, v in zip(self.weights, self.moments[1][:self.n_layers], strict=True):
            _soft_threshold_(w, l1_steps, v.sqrt().add_(eps))

    def _adam_fused(self, fused: Any) -> None:
        """``_adam``, with λ₂'s gradient before it and L1's proximal step after, in one pass over each tensor:
        the compiled kernel (``_kernels``), member by member with its own step count."""
        lr = self.spec.lr
        steps = self.steps.view(-1)
        k = steps.numel()
        for i, (p, m, v) in enumerate(zip(self.params, self.moments[0], self.moments[1], strict=True)):
            g = p.grad
            assert g is not None and p.is_contiguous() and m.is_contiguous() and v.is_contiguous()
            weight = i < self.n_layers  # biases: no penalty
            l2 = self.l2_grad.data_ptr() if weight and self.l2_grad is not None else None
            l1 = self.l1.data_ptr() if weight and self.l1 is not None else None
            fused(p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), p[0].numel(), k, steps.data_ptr(),
                  l2, l1, lr, *ADAM_BETAS, ADAM_EPS)

    @torch.no_grad()
    def evaluate(self, split: Split) -> list[_Measure]:
        """Plain loss and accuracy per member, in eval mode (no dropout, no smoothing, no penalty).

        The rows go through in chunks whose activations stay small (``EVAL_FLOATS``): a whole split's
        for K members is tens of MB, which the allocator maps and unmaps anew on every call (page
        faults, memory traffic); in chunks it took 0.7x the time on digits at K = 10.
        """
        rows = max(1, EVAL_FLOATS // (len(self.knobs) * max(p.shape[1] for p in self.weights)))
        out = torch.cat([self.forward(split.X[i:i + rows]) for i in range(0, len(split), rows)], dim=2)
        loss = self.losses(out, split.y).tolist()
        if self.task != "classification":
            return [(v, None) for v in loss]
        # max's indices, the first of equal maxima as argmax's: argmax over a middle dimension took 16x as long
        acc = (out.max(1).indices == split.y).float().mean(-1).tolist()
        return list(zip(loss, acc, strict=True))

    def member_state(self, pos: int) -> list[torch.Tensor]:
        return [p.detach()[pos].clone() for p in self.params]


@dataclass
class _Runs:
    """Adam's view of the members: runs that share a step count (a cohort), each tensor split by them.

    Made once per resize (``of``), not at every step: splitting six tensors four ways per cohort, and a
    step-count tensor per run, was about 150 small torch calls a step with five cohorts.
    """

    sizes: list[int]  # members per run, in member order
    counts: list[torch.Tensor]  # each run's step count (float32, as torch's Adam keeps it)
    steps: list[torch.Tensor]  # per split tensor, its run's count
    params: list[torch.Tensor]
    m: list[torch.Tensor]
    v: list[torch.Tensor]

    @classmethod
    def of(cls, steps: torch.Tensor, params: list[torch.Tensor], moments: list[list[torch.Tensor]]) -> _Runs:
        sizes: list[int] = []
        values: list[float] = []
        for t in steps.flatten().tolist():
            if values and values[-1] == t:
                sizes[-1] += 1
            else:
                sizes.append(1)
                values.append(t)
        counts = [torch.tensor(t, dtype=torch.float32) for t in values]

        def split(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            return [part for t in tensors for part in t.detach().split_with_sizes(sizes)]
        return cls(sizes, counts, counts * len(params), split(params), split(moments[0]), split(moments[1]))


class _Dense(torch.autograd.Function):
    """A hidden layer for every member, h·Wᵀ + b, with weights stored (K, out, in) as ``nn.Linear`` stores them.

    The weight gradient is gᵀ·h, in the weights' own layout; autograd's backward of ``baddbmm`` would form
    hᵀ·g, (K, in, out), and hand back its transpose. The layout matters on a narrow layer: on the output
    layer (10 outputs on digits) MKL took 272 µs at K = 10 for hᵀ·g and 58 for gᵀ·h, the layer's products
    582 against 237 µs a step (``bench/kernels.py``); on the square layers either costs the same.
    """

    @staticmethod
    def product(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The layer's outputs (K, rows, out), as ``forward`` computes them (evaluation calls it without a graph)."""
        return bmm(h, w.transpose(1, 2), b)

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # forward with ctx, not setup_context: with one, each apply binds its arguments through
        # inspect.signature (30 µs, three times a step)
        ctx.save_for_backward(h, w)
        return _Dense.product(h, w, b)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, w = ctx.saved_tensors
        return _Dense.grads(ctx.needs_input_grad, g, h, w)

    @staticmethod
    def grads(needed: Sequence[bool], g: torch.Tensor, h: torch.Tensor, w: torch.Tensor
              ) -> tuple[torch.Tensor | None, ...]:
        """The gradients of h, W and b (each where ``needed``) from the gradient ``g`` at the product."""
        dh = bmm(g, w) if needed[0] else None
        dw = bmm(g.transpose(1, 2), h) if needed[1] else None
        db = g.sum(1, keepdim=True) if needed[2] else None
        return dh, dw, db


class _SiteDrop:
    """One hidden site's dropout for the compiled kernels (``_kernels.c``): each cohort's bits, each
    member's cohort, and the members' τ and scale (``_mask``'s)."""

    def __init__(self, fns: Kernels, bits: list[torch.Tensor], counts: list[int] | None,
                 site: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.fns, self.bits = fns, bits  # the bits are read through their pointers: kept alive here
        self.cut, self.scale = site
        members = self.cut.shape[0]
        which = [0] * members if counts is None else [c for c, k in enumerate(counts) for _ in range(k)]
        assert len(which) == members and all(b.is_contiguous() for b in bits)
        self.cohort = (ctypes.c_int64 * members)(*which)
        self.pointers = (ctypes.c_void_p * len(bits))(*[b.data_ptr() for b in bits])

    def relu_dropout_(self, z: torch.Tensor) -> None:
        """ReLU then the members' masks, in place on the layer's product ``z`` (K, rows, width)."""
        assert z.is_contiguous() and z.dtype == torch.float32 and z[0].numel() == self.bits[0].numel()
        self.fns.relu_dropout(z.data_ptr(), z[0].numel(), z.shape[0], self.pointers, self.cohort,
                              self.cut.data_ptr(), self.scale.data_ptr())

    def grad(self, g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The gradient at the product from the gradient ``g`` at the outputs ``out``."""
        g = g.contiguous()
        gz = torch.empty_like(out)
        self.fns.relu_dropout_grad(g.data_ptr(), out.data_ptr(), gz.data_ptr(), out[0].numel(), out.shape[0],
                                   self.scale.data_ptr())
        return gz


class _ReluDropDense(torch.autograd.Function):
    """A hidden ReLU layer with dropout in training: ``_Dense``'s product, then ReLU and the members'
    masks in place on it in one pass (``_SiteDrop``), one autograd node.

    The outputs are ``_Dense``, ReLU and ``h * _mask(...)``'s bit for bit, without a mask tensor: the
    gradient reaches the product where an output is positive (active and kept), scaled by 1/(1-p),
    and nowhere else, where the three nodes' is g·0 or 0.
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, drop: _SiteDrop) -> torch.Tensor:
        out = _Dense.product(h, w, b)
        drop.relu_dropout_(out)
        ctx.save_for_backward(h, w, out)  # with ctx, as ``_Dense.forward``
        ctx.drop = drop
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, w, out = ctx.saved_tensors
        return *_Dense.grads(ctx.needs_input_grad, ctx.drop.grad(g, out), h, w), None


class _LastDense(torch.autograd.Function):
    """The output layer, as ``_Dense`` but transposed: (W·hᵀ + bᵀ), outputs (K, out, rows).

    With 10 outputs, this product took half the time of ``_Dense``'s (64 against 129 µs at K = 10,
    128 rows), and the softmax after it a sixteenth (``bench/kernels.py``).
    """

    @staticmethod
    def product(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The layer's outputs (K, out, rows), as ``forward`` computes them (evaluation calls it without a graph)."""
        return bmm(w, h.transpose(1, 2), b.transpose(1, 2))

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, w)  # with ctx, as ``_Dense.forward``
        return _LastDense.product(h, w, b)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, w = ctx.saved_tensors
        dh = bmm(g.transpose(1, 2), w) if ctx.needs_input_grad[0] else None
        dw = bmm(g, h) if ctx.needs_input_grad[1] else None
        db = g.sum(2, keepdim=True).transpose(1, 2) if ctx.needs_input_grad[2] else None
        return dh, dw, db


def _soft_threshold_(w: torch.Tensor, threshold: torch.Tensor, denom: torch.Tensor | None = None) -> None:
    """L1's proximal step in place: w ← sign(w)·max(|w| − t, 0), with t = ``threshold`` (per member, broadcast),
    or ``threshold / denom`` (per weight: Adam's step), divided in the same pass as the subtraction.

    |w| − t, clamped and given w's sign, is w − clamp(w, −t, t) to the bit (up to the sign of a zero), without
    the three-operand ``clamp`` and its negated copy of t.
    """
    shrunk = w.abs()
    if denom is None:
        shrunk.sub_(threshold)
    else:
        shrunk.addcdiv_(threshold.expand_as(w), denom, value=-1.0)
    torch.copysign(shrunk.clamp_min_(0.0), w, out=w)


EVAL_FLOATS = 2**19
"""Activation floats per chunk of rows when evaluating (2 MiB: a core's cache, not the whole split's)."""


def _cut(rate: torch.Tensor) -> torch.Tensor:
    """Each rate's τ = ⌈p·2¹⁶⌉ − 32768.5: a uniform u = (b + 32768)·2⁻¹⁶ is ≥ p (the lone loop keeps the
    unit) exactly when its bits b, an integer, exceed τ, a half-integer. Worked in float64 from the rate's
    float32, as the lone loop compares it; every τ, from -32768.5 (p = 0) up, is exact in float32."""
    return (torch.ceil(rate.double() * 2.0**16) - 32768.5).float()


def _mask(bits: Sequence[torch.Tensor], site: tuple[torch.Tensor, torch.Tensor],
          counts: Sequence[int] | None = None) -> torch.Tensor:
    """Each member's inverted-dropout mask from one site's bits (``dropout_bits``): 1/(1-p) where the lone
    loop's u ≥ p, else 0.

    ``bits``: one (rows, width) per cohort; ``counts``: each cohort's members, in order (None: one cohort,
    whose bits every member shares). Each cohort's b − τ is written into its members' rows of the masks,
    without spreading its bits to them first.

    In float arithmetic: b − τ is never 0 (an integer less a half-integer), its sign is 1 where the unit is
    kept and -1 where it is dropped; clamped at 0 and scaled, the masks are ``(u >= p).float() * scale``,
    bit for bit. Torch's comparisons write bools a byte at a time: at K = 10 (10 x 128 x 256 units) the
    comparison, its cast and the scaling took 283 µs, these four passes 56 (``bench/kernels.py``).
    """
    cut, scale = site
    if counts is None:
        masks = torch.sub(bits[0], cut)
    else:
        masks = torch.empty(cut.shape[0], *bits[0].shape)
        start = 0
        for b, k in zip(bits, counts, strict=True):
            torch.sub(b, cut[start:start + k], out=masks[start:start + k])
            start += k
    return masks.sign_().clamp_min_(0.0).mul_(scale)


def _lone_model(model_spec: ModelSpec, n_in: int, n_out: int, state: list[torch.Tensor]) -> MLP:
    """A member as the plain ``MLP`` its lone run would return."""
    model = MLP(n_in, model_spec.hidden or [], n_out, model_spec.activation)
    n = len(model.linears)
    with torch.no_grad():
        for lin, w, b in zip(model.linears, state[:n], state[n:], strict=True):
            lin.weight.copy_(w)
            lin.bias.copy_(b.view(-1))
    model.eval()
    return model


Joining = Sequence[tuple[Knobs, EpochCallback | None]]
"""Members to add to a batch: each one's knobs and epoch callback."""


@with_product_threads
def train_batched(data: Dataset, model_spec: ModelSpec, spec: TrainingSpec, knobs: Sequence[Knobs], seed: int,
                  on_epoch: Sequence[EpochCallback | None] | None = None,
                  on_end: Callable[[int, MemberOutcome], None] | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  refill: Callable[[int], Joining] | None = None,
                  after_epoch: Callable[[], None] | None = None, size: int | None = None,
                  train_curve: bool = True) -> list[MemberOutcome]:
    """Train one model per entry of ``knobs``, all with ``seed``, as one batched network.

    Each member's losses, callbacks and result are those ``train(data, model_spec,
    spec, knobs[k], seed, on_epoch[k])`` would give, to float tolerance.

    The products run on OpenBLAS where ``_gemm.products()`` has it, the calling thread's torch threads
    going to it while the members train (``threads_for_products``).

    Args:
        on_epoch: one callback per member (or None), called as ``train`` calls it; what it raises
            (pruning, a cancel) ends that member alone.
        on_end: called with (member index, outcome) as soon as a member ends, while the others train on.
        should_stop: asked between batches, about once a second (``STOP_POLL_S``); True ends every member
            with ``Cancelled``.
        refill: called at each epoch boundary where the batch has free places (members that ended there
            or before, or places ``size`` has beyond them), with their number, after the members that ended
            there are reported to ``on_end``; the members it returns join the batch from their first epoch
            and are numbered after those before them. Return nothing to let the batch shrink.
        after_epoch: called once per epoch boundary, after every live member's ``on_epoch`` and before
            the members that ended there are reported to ``on_end`` (a caller writes the epoch's reports
            together there).
        size: the most members the batch holds, ``len(knobs)`` when None (or less).
        train_curve: as ``train``'s: False measures each member's train loss once, from the weights it keeps.

    Returns:
        Per member, in the order they joined: its ``TrainResult``, or the exception that ended it
        (``TrialFailed`` for a non-finite loss).

    Raises:
        ValueError: batch norm (its statistics are not stacked), or no members.
    """
    if model_spec.batch_norm:
        raise ValueError("batched training needs batch_norm: false (batch statistics are per model)")
    if not knobs:
        raise ValueError("train_batched needs at least one member")
    keep_freed_memory()
    size = max(size or 0, len(knobs))
    members: list[_Member] = []
    outcomes: list[MemberOutcome | None] = []
    gen = torch.Generator().manual_seed(seed)
    base = build_model(model_spec, data.n_features, data.n_outputs, gen)
    after_init = gen.get_state()  # where each cohort's generator starts: past the init, as ``train`` draws it
    widths = [data.n_features, *(model_spec.hidden or [])]
    stack = _Stack(base, spec, data.task)
    live: list[_Member] = []
    X, y, n = data.train.X, data.train.y, len(data.train)
    patience = spec.early_stopping.patience if spec.early_stopping else None
    min_delta = spec.early_stopping.min_delta if spec.early_stopping else 0.0

    def tell(ended: dict[int, MemberOutcome]) -> None:
        """Record the members at the given positions as ended, and report them to ``on_end``."""
        for pos, outcome in ended.items():
            outcomes[live[pos].index] = outcome
            if on_end is not None:
                on_end(live[pos].index, outcome)

    def resize(ended: dict[int, MemberOutcome], joining: Joining) -> None:
        """Drop the members at the given positions (``tell`` has recorded them) and add ``joining`` as a new
        cohort."""
        nonlocal live
        keep = [p for p in range(len(live)) if p not in ended]
        live = [live[p] for p in keep]
        if joining:
            cohort = _Cohort(torch.Generator())
            cohort.gen.set_state(after_init)
            for k, cb in joining:
                member = _Member(len(members), k, cb, cohort)
                members.append(member)
                outcomes.append(None)
                live.append(member)
        stack.resize(keep, [k for k, _ in joining])

    def result(pos: int) -> MemberOutcome:
        m = live[pos]
        state = m.best_state if m.best_state is not None else stack.member_state(pos)
        model = _lone_model(model_spec, data.n_features, data.n_outputs, state)
        weights = [lin.weight for lin in model.linears]
        tr, va = m.best_measures
        if tr is None:  # no train curve: measured once, from the weights kept
            try:
                tr = kept_train_measure(model, data, m.best[1])
            except TrialFailed as exc:
                return exc
        return TrainResult(
            train_loss=tr[0], val_loss=va[0], train_acc=tr[1], val_acc=va[1],
            sparsity=sparsity(weights), features_mask=features_kept_mask(weights[0]),
            epochs=m.cohort.epoch, best_epoch=m.best[1], seconds=m.seconds,
            curve_train=m.curve_t, curve_val=m.curve_v, model=model,
        )

    def sites_bits(cohorts: list[_Cohort], batch: int) -> list[list[torch.Tensor] | None]:
        """Each dropout site's bits for the ``batch``-th batch of each cohort's epoch (None: no member drops
        there). A cohort's members sit together: they joined together, and resizing keeps the order."""
        return [None if stack.keep[s] is None else [bits.epoch(c.epoch)[batch] for c in cohorts]
                for s, bits in enumerate(site_bits)]

    def spread(cohorts: list[_Cohort]) -> tuple[torch.Tensor | None, list[int] | None]:
        """Each live member's cohort (its position in ``cohorts``) and each cohort's live members; None
        for one cohort, whose members all see the same rows and masks."""
        if len(cohorts) == 1:
            return None, None
        which = [cohorts.index(m.cohort) for m in live]
        assert which == sorted(which), "a cohort's members sit together"
        return torch.tensor(which), [which.count(c) for c in range(len(cohorts))]

    rows = [min(spec.batch_size, n - start) for start in range(0, n, spec.batch_size)]
    room = [BITS_KEPT_BYTES]
    site_bits = [_SiteBits(g, width, rows, room)
                 for g, width in zip(dropout_generators(seed, len(base.hidden)), widths, strict=True)]
    resize({}, list(zip(knobs, on_epoch if on_epoch is not None else [None] * len(knobs), strict=True)))
    next_poll = time.monotonic() + STOP_POLL_S
    while live:
        epoch_started = time.perf_counter()
        cohorts = list(dict.fromkeys(m.cohort for m in live))  # in joining order
        for c in cohorts:
            c.order = torch.randperm(n, generator=c.gen)
        # one cohort: every member sees the same rows; several: each member its cohort's rows
        which, counts = spread(cohorts)
        orders = None if which is None else torch.stack([c.order for c in cohorts if c.order is not None])
        stopped = False
        for batch, start in enumerate(range(0, n, spec.batch_size)):
            if should_stop is not None and time.monotonic() >= next_poll:
                if should_stop():
                    cancelled: dict[int, MemberOutcome] = {
                        pos: Cancelled(f"cancelled during epoch {m.cohort.epoch + 1}") for pos, m in enumerate(live)}
                    tell(cancelled)
                    resize(cancelled, [])
                    stopped = True
                    break
                next_poll = time.monotonic() + STOP_POLL_S
            if orders is None:
                assert cohorts[0].order is not None
                each = cohorts[0].order[start:start + spec.batch_size]
                xb, yb = X.index_select(0, each), y.index_select(0, each)
            else:  # each member's rows: (members, rows)
                assert which is not None
                each = orders[:, start:start + spec.batch_size].index_select(0, which)
                flat = each.flatten()
                xb, yb = X.index_select(0, flat).view(*each.shape, -1), y.index_select(0, flat).view(each.shape)
            losses = stack.train_losses(stack.forward(xb, sites_bits(cohorts, batch), counts), yb)
            finite = torch.isfinite(losses)
            if bool(finite.all()):
                stack.step(losses.sum())
                continue
            bad: dict[int, MemberOutcome] = {
                int(p): TrialFailed(f"the training loss became {float(losses[p].detach())} in epoch "
                                    f"{live[int(p)].cohort.epoch + 1}") for p in (~finite).nonzero().flatten()}
            if len(bad) < len(live):
                stack.step(losses[finite].sum())  # each member's gradient comes from its own loss alone
            tell(bad)
            resize(bad, [])
            if not live:
                break
            which, counts = (None, None) if which is None else spread(cohorts)
        if stopped or not live:
            break
        for c in cohorts:
            c.epoch += 1
        vas = stack.evaluate(data.val)
        trs: Sequence[_Measure | None] = stack.evaluate(data.train) if train_curve else [None] * len(vas)
        share = (time.perf_counter() - epoch_started) / len(live)
        ended: dict[int, MemberOutcome] = {}
        for pos, (m, tr, va) in enumerate(zip(live, trs, vas, strict=True)):
            m.seconds += share
            verdict = close_epoch(m, m.cohort.epoch, tr, va, patience, min_delta,
                                  partial(stack.member_state, pos))
            if isinstance(verdict, Exception):
                ended[pos] = verdict
            elif verdict or m.cohort.epoch >= spec.epochs:
                ended[pos] = result(pos)
        if after_epoch is not None:
            after_epoch()
        # the members that ended are told before their places are refilled: the sampler proposes the newcomers
        # knowing how they ended, as it would have had they run one after the other
        tell(ended)
        free = size - len(live) + len(ended)
        joining = refill(free) if refill is not None and free > 0 else []
        if ended or joining:
            resize(ended, joining)
    done: list[MemberOutcome] = []
    for o in outcomes:
        assert o is not None  # every member ends in the loop
        done.append(o)
    return done
