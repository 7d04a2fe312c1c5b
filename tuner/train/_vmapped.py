"""K configurations of a plug-in module or the built-in CNN, trained at once through ``torch.func``.

The MLP has a hand-written stacked trainer (``_batched``); any other module is
batched without knowing its layers: its parameters are stacked on a leading
member axis and ``vmap(functional_call(net, ...), randomness="different")`` runs
every member's forward in one call, so each member draws its own dropout masks.
The dropout knob acts through forward hooks on the module's dropout modules (set
to p = 0 themselves), which read each member's rate inside the vmapped call.
The loss, L1 (the proximal step), L2 (a penalty, or AdamW's decoupled decay),
label smoothing, early stopping and the leaving of stopped members are as in
``train_batched``, with ``train_batched``'s contract.

Buffers are stacked like the parameters, so batch norm's running statistics,
updated in place by the forward, are each member's own. Not every module can be
vmapped: a forward that branches on a tensor's value, calls ``.item()`` or makes
shapes from values has no single batched form. ``vmap_blocker`` tries one
training step and an eval pass on a tiny batch and says why not; such a job
trains its trials one at a time.

With every dropout rate at 0 a member's losses equal ``train``'s with the same
seed to float tolerance: the same init (the model built from the seed as the lone
loop builds it) and the same batch order. Dropout masks come from torch's global
generator, each member's its own, as a plug-in's do alone.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.utils.flop_counter import FlopCounterMode

from tuner.errors import Cancelled, TrialFailed
from tuner.knobs import Knobs
from tuner.plugins import load_factory
from tuner.spec import ModelSpec, TrainingSpec
from tuner.train._batched import MemberOutcome, close_epoch
from tuner.train._data import Dataset, Split
from tuner.train._loop import STOP_POLL_S, EpochCallback, TrainResult, kept_train_measure
from tuner.train._memory import keep_freed_memory
from tuner.train._module import PluginModel, build_any, decay_weights, dropout_modules, has_batch_norm
from tuner.train._regularizers import prox_l1_, sparsity

__all__ = ["VMAPPED_KINDS", "forward_work", "train_vmapped", "vmap_blocker"]

VMAPPED_KINDS = ("module", "cnn")
"""The model kinds whose trials batch through ``torch.func`` (the MLP and linear kinds have ``train_batched``)."""

_Measure = tuple[float, float | None]  # (plain loss, accuracy or None)
_ALPHA = 1.7580993408473766  # SELU's alpha: what alpha dropout sets a dropped unit to (scaled)


def _build(model_spec: ModelSpec, data: Dataset, gen: torch.Generator) -> PluginModel:
    """The model ``train`` builds from ``gen``: the same draw, so the same initial weights."""
    model = build_any(model_spec, data, gen)
    assert isinstance(model, PluginModel), f"kind {model_spec.kind!r} is no plug-in"
    return model


def _mask_dims(module: nn.Module, dim: int) -> int | None:
    """How many leading dims a dropout module's mask spans as torch draws it (None: every element)."""
    if isinstance(module, nn.Dropout1d):
        return 2 if dim == 3 else 1
    if isinstance(module, nn.Dropout3d):
        return 2 if dim == 5 else 1
    if isinstance(module, (nn.Dropout2d, nn.FeatureAlphaDropout)):
        return 2
    return None


def _drop(x: torch.Tensor, p: torch.Tensor, dims: int | None, alpha: bool) -> torch.Tensor:
    """Dropout of ``x`` at rate ``p`` (a member's rate, a tensor inside ``vmap``), as torch's module computes it."""
    shape = x.shape if dims is None else x.shape[:dims] + (1,) * (x.dim() - dims)
    keep = torch.rand(shape, dtype=x.dtype, device=x.device) >= p
    if alpha:  # torch's alpha dropout: the kept units scaled by a, the dropped set to the affine b
        a = 1.0 / torch.sqrt((_ALPHA**2 * p + 1.0) * (1.0 - p))
        kept = keep.to(x.dtype)
        return x * kept * a + ((kept - 1.0) * _ALPHA * a + _ALPHA * a * p)
    return x * torch.where(keep, 1.0 / (1.0 - p), 0.0)


class _Sites:
    """The members' dropout rates inside a vmapped forward: site 0 is the input, then each dropout module."""

    def __init__(self, net: nn.Module) -> None:
        self.rates: torch.Tensor | None = None  # set only while a training forward runs
        self.active: list[bool] = []
        self.index: dict[int, int] = {}
        for site, (_, module) in enumerate(dropout_modules(net), start=1):
            module.p = 0.0  # the module passes its input through; the hook drops per member
            self.index[id(module)] = site
            module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor | None:
        site = self.index[id(module)]
        if self.rates is None or not module.training or not self.active[site]:
            return None
        alpha = isinstance(module, (nn.AlphaDropout, nn.FeatureAlphaDropout))
        return _drop(args[0], self.rates[site], _mask_dims(module, args[0].dim()), alpha)


@dataclass
class _Member:
    index: int  # position in the caller's list
    knobs: Knobs
    on_epoch: EpochCallback | None
    curve_t: list[float] = field(default_factory=list)
    curve_v: list[float] = field(default_factory=list)
    best: tuple[float, int] = (math.inf, 0)  # val loss, epoch
    best_state: dict[str, torch.Tensor] | None = None
    best_measures: tuple[_Measure | None, _Measure] = (None, (0.0, None))  # train's None: not measured yet
    seconds: float = 0.0  # its share of the batch's time


def _member_losses(out: torch.Tensor, y: torch.Tensor, task: str, smoothing: torch.Tensor | None) -> torch.Tensor:
    """Each member's mean loss (K,) from its outputs (K, rows, out): cross-entropy with its smoothing, or MSE."""
    if task != "classification":
        return (out.squeeze(-1) - y).pow(2).mean(-1)
    logp = out.log_softmax(-1)
    nll = -logp.gather(-1, y.view(1, -1, 1).expand(out.shape[0], -1, 1)).squeeze(-1)
    if smoothing is None:
        return nll.mean(-1)
    return ((1.0 - smoothing) * nll - smoothing * logp.mean(-1)).mean(-1)


class _Stack:
    """The live members' parameters and buffers of one module, stacked on a leading member axis, and their optimizer.

    Buffers are stacked too: what a forward changes in place (batch norm's running statistics) is
    each member's own, as it would be alone.
    """

    def __init__(self, model: PluginModel, members: list[_Member], spec: TrainingSpec, task: str) -> None:
        self.net, self.spec, self.task = model.net, spec, task
        self.sites = _Sites(self.net)
        decay_ids = {id(w) for w in decay_weights(self.net)}
        named = dict(self.net.named_parameters())
        self.decay_names = [n for n, p in named.items() if id(p) in decay_ids]
        k = len(members)
        self.params = {n: p.detach().unsqueeze(0).repeat(k, *([1] * p.dim())).requires_grad_(p.requires_grad)
                       for n, p in named.items()}
        self.buffers = {n: b.detach().unsqueeze(0).repeat(k, *([1] * b.dim())) for n, b in self.net.named_buffers()}
        self.opt = self._optimizer()
        self.set_members(members)
        self._train = vmap(self._forward_one, in_dims=(0, 0, 0, None), randomness="different")
        self._eval = vmap(self._eval_one, in_dims=(0, 0, None))

    def _optimizer(self) -> torch.optim.Optimizer:
        params = list(self.params.values())
        if self.spec.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.spec.lr, momentum=self.spec.momentum)
        if self.spec.optimizer in ("adam", "adamw"):
            return torch.optim.Adam(params, lr=self.spec.lr)  # AdamW: Adam plus the decay in ``step``
        raise ValueError(f"batched training knows optimizers adam, adamw and sgd, not {self.spec.optimizer!r}")

    def set_members(self, members: list[_Member]) -> None:
        """Per-member knobs as tensors over the member axis."""
        knobs = [m.knobs for m in members]
        self.l1 = torch.tensor([k.l1 for k in knobs]) if any(k.l1 > 0 for k in knobs) else None
        l2 = torch.tensor([k.l2 for k in knobs])
        adamw = self.spec.optimizer == "adamw"
        self.l2 = l2 if bool(l2.any()) and not adamw else None
        self.decay = 1.0 - self.spec.lr * 2.0 * l2 if bool(l2.any()) and adamw else None  # AdamW's w ← w·(1 − lr·2λ₂)
        self.smoothing = (torch.tensor([k.label_smoothing for k in knobs]).view(-1, 1)
                          if any(k.label_smoothing > 0 for k in knobs) else None)
        n_drop = len(self.sites.index)
        for k in knobs:
            if k.dropout and len(k.dropout) != n_drop:
                raise ValueError(f"the model has {n_drop} dropout modules, but got {len(k.dropout)} rates")
        self.rates = torch.tensor([[k.input_dropout, *(k.dropout or (0.0,) * n_drop)] for k in knobs])
        self.sites.active = [bool((self.rates[:, s] > 0).any()) for s in range(1 + n_drop)]

    def compact(self, keep: list[int], members: list[_Member]) -> None:
        """Keep only the members at positions ``keep``: their slices of the parameters and optimizer state."""
        idx = torch.tensor(keep)
        old = list(self.params.values())
        self.params = {n: p.detach()[idx].requires_grad_(p.requires_grad) for n, p in self.params.items()}
        self.buffers = {n: b[idx] for n, b in self.buffers.items()}
        state = self.opt.state
        self.opt = self._optimizer()
        for o, p in zip(old, self.params.values(), strict=True):
            if o in state:
                self.opt.state[p] = {key: (v[idx] if v.dim() > 0 else v.clone()) if isinstance(v, torch.Tensor)
                                     else v for key, v in state[o].items()}
        self.set_members(members)

    def _forward_one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], rates: torch.Tensor,
                     x: torch.Tensor) -> torch.Tensor:
        """One member's training forward (inside ``vmap``): its input dropout, then the module with its rates."""
        if self.sites.active[0]:
            x = _drop(x, rates[0], None, False)
        self.sites.rates = rates
        try:
            out: torch.Tensor = functional_call(self.net, (params, buffers), (x,))
        finally:
            self.sites.rates = None
        return out

    def _eval_one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                  x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(self.net, (params, buffers), (x,))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's training outputs (K, rows, out) for the shared input ``x``."""
        self.net.train()
        out: torch.Tensor = self._train(self.params, self.buffers, self.rates, x)
        return out

    def train_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training objective per member: its smoothed loss plus λ₂·Σw² (unless AdamW decays instead)."""
        loss = _member_losses(out, y, self.task, self.smoothing)
        if self.l2 is not None and self.decay_names:
            squares = sum(self.params[n].pow(2).flatten(1).sum(1) for n in self.decay_names)
            loss = loss + self.l2 * squares
        return loss

    def step(self, total: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        weights = [self.params[n] for n in self.decay_names]
        if self.decay is not None:
            with torch.no_grad():
                for w in weights:
                    w.mul_(self.decay.view(-1, *([1] * (w.dim() - 1))))
        self.opt.step()
        if self.l1 is not None:
            for w in weights:
                prox_l1_([w], self.l1.view(-1, *([1] * (w.dim() - 1))), self.opt)

    @torch.no_grad()
    def evaluate(self, split: Split) -> list[_Measure]:
        """Plain loss and accuracy per member, in eval mode (no dropout, no smoothing, no penalty)."""
        self.net.eval()
        out = self._eval({n: p.detach() for n, p in self.params.items()}, self.buffers, split.X).float()
        loss = _member_losses(out, split.y, self.task, None).tolist()
        if self.task != "classification":
            return [(v, None) for v in loss]
        acc = (out.argmax(-1) == split.y).float().mean(-1).tolist()
        return list(zip(loss, acc, strict=True))

    def member_state(self, pos: int) -> dict[str, torch.Tensor]:
        """The member's parameters and buffers, by name: a ``state_dict`` of the plain module."""
        return {n: t.detach()[pos].clone() for n, t in (self.params | self.buffers).items()}


def train_vmapped(data: Dataset, model_spec: ModelSpec, spec: TrainingSpec, knobs: Sequence[Knobs], seed: int,
                  on_epoch: Sequence[EpochCallback | None] | None = None,
                  on_end: Callable[[int, MemberOutcome], None] | None = None,
                  should_stop: Callable[[], bool] | None = None, train_curve: bool = True) -> list[MemberOutcome]:
    """Train one plug-in (or CNN) per entry of ``knobs``, all with ``seed``, vmapped as one batched model.

    The contract is ``train_batched``'s: each member's callbacks and result are those ``train(data,
    model_spec, spec, knobs[k], seed, on_epoch[k])`` would give (to float tolerance with dropout off;
    with dropout on, each member draws masks of its own).

    Args:
        on_epoch: one callback per member (or None), called as ``train`` calls it; what it raises
            (pruning, a cancel) ends that member alone.
        on_end: called with (member index, outcome) as soon as a member ends, while the others train on.
        should_stop: asked between batches, about once a second (``STOP_POLL_S``); True ends every member
            with ``Cancelled``.
        train_curve: as ``train``'s: False measures each member's train loss once, from the weights it keeps.

    Returns:
        Per member, in order: its ``TrainResult``, or the exception that ended it (``TrialFailed``
        for a non-finite loss).

    Raises:
        ValueError: no members, or a module ``vmap_blocker`` refuses (ask it first).
    """
    if not knobs:
        raise ValueError("train_vmapped needs at least one member")
    if (why := vmap_blocker(model_spec, data)) is not None:
        raise ValueError(f"this model cannot train batched: {why}")
    keep_freed_memory()
    callbacks = list(on_epoch) if on_epoch is not None else [None] * len(knobs)
    live = [_Member(i, k, cb) for i, (k, cb) in enumerate(zip(knobs, callbacks, strict=True))]
    outcomes: list[MemberOutcome | None] = [None] * len(live)
    gen = torch.Generator().manual_seed(seed)  # the init, then each epoch's batch order: as ``train`` draws them
    stack = _Stack(_build(model_spec, data, gen), live, spec, data.task)
    X, y, n = data.train.X, data.train.y, len(data.train)
    batch_norm = has_batch_norm(stack.net)
    patience = spec.early_stopping.patience if spec.early_stopping else None
    min_delta = spec.early_stopping.min_delta if spec.early_stopping else 0.0

    def finish(ended: dict[int, MemberOutcome]) -> None:
        """Record the members at the given positions as ended and drop them from the stack."""
        nonlocal live
        for pos, outcome in ended.items():
            outcomes[live[pos].index] = outcome
            if on_end is not None:
                on_end(live[pos].index, outcome)
        keep = [p for p in range(len(live)) if p not in ended]
        live = [live[p] for p in keep]
        if live:
            stack.compact(keep, live)

    def result(pos: int, epoch: int) -> MemberOutcome:
        m = live[pos]
        model = _build(model_spec, data, torch.Generator().manual_seed(seed))  # a plain module, no hooks
        state = m.best_state if m.best_state is not None else stack.member_state(pos)
        model.net.load_state_dict(state)
        model.set_dropout(m.knobs.dropout)  # the rates its lone run leaves set
        model.eval()
        tr, va = m.best_measures
        if tr is None:  # no train curve: measured once, from the weights kept
            try:
                tr = kept_train_measure(model, data, m.best[1])
            except TrialFailed as exc:
                return exc
        return TrainResult(
            train_loss=tr[0], val_loss=va[0], train_acc=tr[1], val_acc=va[1],
            sparsity=sparsity(decay_weights(model)), features_mask=[True] * data.n_features,
            epochs=epoch, best_epoch=m.best[1], seconds=m.seconds,
            curve_train=m.curve_t, curve_val=m.curve_v, model=model,
        )

    next_poll = time.monotonic() + STOP_POLL_S
    for epoch in range(1, spec.epochs + 1):
        if not live:
            break
        epoch_started = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, spec.batch_size):
            if should_stop is not None and time.monotonic() >= next_poll:
                if should_stop():
                    finish({pos: Cancelled(f"cancelled during epoch {epoch}") for pos in range(len(live))})
                    break
                next_poll = time.monotonic() + STOP_POLL_S
            rows = order[start:start + spec.batch_size]
            if len(rows) < 2 and batch_norm:
                continue  # batch norm cannot normalize a single row (as ``train`` skips it)
            losses = stack.train_losses(stack.forward(X[rows]), y[rows])
            finite = torch.isfinite(losses)
            if bool(finite.all()):
                stack.step(losses.sum())
                continue
            bad = {int(p): TrialFailed(f"the training loss became {float(losses[p].detach())} in epoch {epoch}")
                   for p in (~finite).nonzero().flatten()}
            if len(bad) < len(live):
                stack.step(losses[finite].sum())  # each member's gradient comes from its own loss alone
            finish(bad)  # type: ignore[arg-type]
            if not live:
                break
        if not live:
            break
        vas = stack.evaluate(data.val)
        trs: Sequence[_Measure | None] = stack.evaluate(data.train) if train_curve else [None] * len(vas)
        share = (time.perf_counter() - epoch_started) / len(live)
        ended: dict[int, MemberOutcome] = {}
        for pos, (m, tr, va) in enumerate(zip(live, trs, vas, strict=True)):
            m.seconds += share
            verdict = close_epoch(m, epoch, tr, va, patience, min_delta,
                                  partial(stack.member_state, pos))
            if isinstance(verdict, Exception):
                ended[pos] = verdict
            elif verdict:
                ended[pos] = result(pos, epoch)
        if ended:
            finish(ended)
    if live:
        finish({pos: result(pos, len(m.curve_v)) for pos, m in enumerate(live)})
    done: list[MemberOutcome] = []
    for o in outcomes:
        assert o is not None  # every member ends in the loop or after it
        done.append(o)
    return done


@dataclass(frozen=True)
class _Probe:
    blocker: str | None
    work: int  # multiply-adds of one example's forward pass


_probes: dict[tuple[str, tuple[int, ...], int, str, object], _Probe] = {}
_probes_lock = threading.Lock()


def _probe(model_spec: ModelSpec, data: Dataset) -> _Probe:
    """Build the model, count its work, and try two members' training step and eval pass under ``vmap``."""
    # the factory itself too: a models file edited since is loaded again, as a new function
    factory = load_factory(model_spec.factory) if model_spec.kind == "module" and model_spec.factory else None
    key = (model_spec.model_dump_json(), tuple(data.input_shape), data.n_outputs, data.task, factory)
    with _probes_lock:
        if key in _probes:
            return _probes[key]
    model = _build(model_spec, data, torch.Generator().manual_seed(0))
    x, y = data.train.X[:4], data.train.y[:4]
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            model(x[:2])  # two rows: batch norm without running statistics needs more than one, even in eval
        probe = _Probe(_blocker(model, x, y, data.task), max(1, flops.get_total_flops() // 4))
    except Exception as exc:  # its own forward fails: ``check_model`` says why, naming the field
        probe = _Probe(f"the model's forward fails: {type(exc).__name__}: {exc}", 1)
    with _probes_lock:
        _probes[key] = probe
    return probe


def _blocker(model: PluginModel, x: torch.Tensor, y: torch.Tensor, task: str) -> str | None:
    n_drop = len(dropout_modules(model.net))
    members = [_Member(i, Knobs(dropout=(0.1,) * n_drop, input_dropout=0.1), None) for i in range(2)]
    try:
        stack = _Stack(model, members, TrainingSpec(), task)
        stack.step(stack.train_losses(stack.forward(x), y).sum())
        stack.evaluate(Split(x, y))
    except Exception as exc:  # data-dependent control flow, .item(), an op vmap has no rule for
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"torch.func.vmap cannot run the model: {type(exc).__name__}: {first[:300]}"
    return None


def vmap_blocker(model_spec: ModelSpec, data: Dataset) -> str | None:
    """Why K trials of this model cannot train as one vmapped model, or None when they can.

    Tried once per model and data shape (then remembered): one training step of two members with
    dropout on, and an eval pass, under ``vmap``.
    """
    return _probe(model_spec, data).blocker


def forward_work(model_spec: ModelSpec, data: Dataset) -> int:
    """Multiply-adds of one example's forward pass (torch's flop counter on the built model)."""
    return _probe(model_spec, data).work

