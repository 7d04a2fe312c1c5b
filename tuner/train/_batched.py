"""K configurations of one architecture, trained as one batched network.

The knobs regtune searches (λ₁, λ₂, dropout, label smoothing) change the loss,
the masks and the update, never the shapes, so K trials of one model can share
every kernel: weights stacked as (K, in, out), one GEMM for the input batch all
members share, ``baddbmm`` after it. Each member trains exactly as it would
alone in ``tuner.train.train`` with the same seed: the same init and batch
order (one generator, as the lone loop draws it), the same dropout masks (the
lone loop draws each site's masks from its own stream, so one draw per site
serves every member), the same optimizer arithmetic (Adam and SGD are
elementwise; AdamW's decoupled decay is applied per member). Its losses match
the lone run to float tolerance.

A member that stops (early stopping, pruning, a NaN, a cancel, an error in its
callback) leaves the batch: its slices are dropped from the weights and the
optimizer state, so it costs nothing afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import torch

from tuner.errors import Cancelled, TrialFailed
from tuner.knobs import Knobs
from tuner.spec import ModelSpec, TrainingSpec
from tuner.train._data import Dataset, Split
from tuner.train._loop import STOP_POLL_S, EpochCallback, TrainResult
from tuner.train._models import MLP, build_model, dropout_generators
from tuner.train._regularizers import features_kept_mask, prox_l1_, sparsity

__all__ = ["MemberOutcome", "auto_batch", "n_weights", "train_batched"]

MemberOutcome = TrainResult | Exception
"""How a member ended: its measurements, or the exception that stopped it, as ``train`` would have raised it."""

_Measure = tuple[float, float | None]  # (plain loss, accuracy or None)


@dataclass
class _Member:
    index: int  # position in the caller's list
    knobs: Knobs
    on_epoch: EpochCallback | None
    curve_t: list[float] = field(default_factory=list)
    curve_v: list[float] = field(default_factory=list)
    best: tuple[float, int] = (math.inf, 0)  # val loss, epoch
    best_state: list[torch.Tensor] | None = None
    best_measures: tuple[_Measure, _Measure] = ((0.0, None), (0.0, None))
    seconds: float = 0.0  # its share of the batch's time


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
    """The live members' parameters, stacked on a leading member axis, and their optimizer."""

    def __init__(self, base: MLP, members: list[_Member], spec: TrainingSpec, task: str) -> None:
        k = len(members)
        self.act = base.act
        self.n_hidden = len(base.hidden)
        self.spec, self.task = spec, task
        with torch.no_grad():
            self.weights = [lin.weight.detach().T.unsqueeze(0).expand(k, -1, -1).contiguous().requires_grad_()
                            for lin in base.linears]
            self.biases = [lin.bias.detach().view(1, 1, -1).expand(k, 1, -1).contiguous().requires_grad_()
                           for lin in base.linears]
        self.opt = self._optimizer()
        self.set_members(members)

    @property
    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.spec.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=self.spec.lr, momentum=self.spec.momentum)
        return torch.optim.Adam(self.params, lr=self.spec.lr)  # AdamW: Adam plus the decay in ``step``

    def set_members(self, members: list[_Member]) -> None:
        """Per-member knobs as tensors that broadcast over the member axis."""
        def col(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)

        knobs = [m.knobs for m in members]
        self.l1 = col([k.l1 for k in knobs]) if any(k.l1 > 0 for k in knobs) else None
        l2 = [k.l2 for k in knobs]
        self.l2 = torch.tensor(l2) if any(l2) and self.spec.optimizer != "adamw" else None
        # AdamW's decoupled decay, w ← w·(1 − lr·2λ₂), one factor per member as torch applies it per group
        self.decay = (1.0 - self.spec.lr * 2.0 * col(l2)) if any(l2) and self.spec.optimizer == "adamw" else None
        self.smoothing = (torch.tensor([k.label_smoothing for k in knobs]).view(-1, 1)
                          if any(k.label_smoothing > 0 for k in knobs) else None)
        rates = [[k.input_dropout for k in knobs]] + [[k.dropout[i] if i < len(k.dropout) else 0.0 for k in knobs]
                                                       for i in range(self.n_hidden)]
        # per site: where a uniform u keeps a unit, scale it by 1/(1-p); None where no member drops there
        self.keep: list[tuple[torch.Tensor, torch.Tensor] | None] = [
            (col(p), 1.0 / (1.0 - col(p))) if any(v > 0 for v in p) else None for p in rates]

    def compact(self, keep: list[int], members: list[_Member]) -> None:
        """Keep only the members at positions ``keep``: their slices of the weights and optimizer state."""
        idx = torch.tensor(keep)
        old = self.params
        new = [p.detach()[idx].requires_grad_() for p in old]
        n = len(self.weights)
        self.weights, self.biases = new[:n], new[n:]
        state = self.opt.state
        self.opt = self._optimizer()
        for o, p in zip(old, new, strict=True):
            if o in state:
                self.opt.state[p] = {key: (v[idx] if v.dim() > 0 else v.clone()) if isinstance(v, torch.Tensor)
                                     else v for key, v in state[o].items()}
        self.set_members(members)

    def forward(self, x: torch.Tensor, uniforms: Sequence[torch.Tensor | None] = ()) -> torch.Tensor:
        """The members' outputs (K, rows, out) for the shared input ``x``; ``uniforms`` per dropout site."""
        h = x
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            site = self.keep[j] if j <= self.n_hidden else None
            if j == 0 and site is not None and uniforms and uniforms[0] is not None:
                h = h * torch.where(uniforms[0] >= site[0], site[1], 0.0)  # (K, rows, in): masks differ
            if h.dim() == 2:  # the input every member shares: one GEMM over all members' columns
                k, d_in, d_out = w.shape
                flat = w.transpose(0, 1).reshape(d_in, k * d_out)
                h = (h @ flat).view(-1, k, d_out).transpose(0, 1) + b
            else:
                h = torch.baddbmm(b, h, w)
            if j < self.n_hidden:
                h = self.act(h)
                site = self.keep[j + 1]
                if site is not None and uniforms and (u := uniforms[j + 1]) is not None:
                    h = h * torch.where(u >= site[0], site[1], 0.0)
        return h

    def losses(self, out: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor | None = None) -> torch.Tensor:
        """Each member's mean loss (K,): cross-entropy with its own smoothing, or squared error."""
        if self.task != "classification":
            return (out.squeeze(-1) - y).pow(2).mean(-1)
        logp = out.log_softmax(-1)
        nll = -logp.gather(-1, y.view(1, -1, 1).expand(out.shape[0], -1, 1)).squeeze(-1)
        if smoothing is None:
            return nll.mean(-1)
        return ((1.0 - smoothing) * nll - smoothing * logp.mean(-1)).mean(-1)

    def train_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training objective per member: its smoothed loss plus λ₂·Σw² (unless AdamW decays instead)."""
        loss = self.losses(out, y, self.smoothing)
        if self.l2 is not None:
            loss = loss + self.l2 * sum(w.pow(2).sum((1, 2)) for w in self.weights)
        return loss

    def step(self, total: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.decay is not None:
            with torch.no_grad():
                for w in self.weights:
                    w.mul_(self.decay)
        self.opt.step()
        if self.l1 is not None:
            prox_l1_(self.weights, self.l1, self.opt)

    @torch.no_grad()
    def evaluate(self, split: Split) -> list[_Measure]:
        """Plain loss and accuracy per member, in eval mode (no dropout, no smoothing, no penalty)."""
        out = self.forward(split.X)
        loss = self.losses(out, split.y).tolist()
        if self.task != "classification":
            return [(v, None) for v in loss]
        acc = (out.argmax(-1) == split.y).float().mean(-1).tolist()
        return list(zip(loss, acc, strict=True))

    def member_state(self, pos: int) -> list[torch.Tensor]:
        return [p.detach()[pos].clone() for p in self.params]


def _lone_model(model_spec: ModelSpec, n_in: int, n_out: int, state: list[torch.Tensor]) -> MLP:
    """A member as the plain ``MLP`` its lone run would return."""
    model = MLP(n_in, model_spec.hidden or [], n_out, model_spec.activation)
    n = len(model.linears)
    with torch.no_grad():
        for lin, w, b in zip(model.linears, state[:n], state[n:], strict=True):
            lin.weight.copy_(w.T)
            lin.bias.copy_(b.view(-1))
    model.eval()
    return model


def train_batched(data: Dataset, model_spec: ModelSpec, spec: TrainingSpec, knobs: Sequence[Knobs], seed: int,
                  on_epoch: Sequence[EpochCallback | None] | None = None,
                  on_end: Callable[[int, MemberOutcome], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> list[MemberOutcome]:
    """Train one model per entry of ``knobs``, all with ``seed``, as one batched network.

    Each member's losses, callbacks and result are those ``train(data, model_spec,
    spec, knobs[k], seed, on_epoch[k])`` would give, to float tolerance.

    Args:
        on_epoch: one callback per member (or None), called as ``train`` calls it; what it raises
            (pruning, a cancel) ends that member alone.
        on_end: called with (member index, outcome) as soon as a member ends, while the others train on.
        should_stop: asked between batches, about once a second (``STOP_POLL_S``); True ends every member
            with ``Cancelled``.

    Returns:
        Per member, in order: its ``TrainResult``, or the exception that ended it (``TrialFailed``
        for a non-finite loss).

    Raises:
        ValueError: batch norm (its statistics are not stacked), or no members.
    """
    if model_spec.batch_norm:
        raise ValueError("batched training needs batch_norm: false (batch statistics are per model)")
    if not knobs:
        raise ValueError("train_batched needs at least one member")
    callbacks = list(on_epoch) if on_epoch is not None else [None] * len(knobs)
    live = [_Member(i, k, cb) for i, (k, cb) in enumerate(zip(knobs, callbacks, strict=True))]
    outcomes: list[MemberOutcome | None] = [None] * len(live)
    gen = torch.Generator().manual_seed(seed)  # the init, then each epoch's batch order: as ``train`` draws them
    base = build_model(model_spec, data.n_features, data.n_outputs, gen)
    sites = dropout_generators(seed, len(base.hidden))
    widths = [data.n_features, *(model_spec.hidden or [])]
    stack = _Stack(base, live, spec, data.task)
    X, y, n = data.train.X, data.train.y, len(data.train)
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

    def result(pos: int, epoch: int) -> TrainResult:
        m = live[pos]
        state = m.best_state if m.best_state is not None else stack.member_state(pos)
        model = _lone_model(model_spec, data.n_features, data.n_outputs, state)
        weights = [lin.weight for lin in model.linears]
        tr, va = m.best_measures
        return TrainResult(
            train_loss=tr[0], val_loss=va[0], train_acc=tr[1], val_acc=va[1],
            sparsity=sparsity(weights), features_mask=features_kept_mask(weights[0]),
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
            uniforms = [torch.rand((len(rows), w), generator=g) if stack.keep[s] is not None else None
                        for s, (g, w) in enumerate(zip(sites, widths, strict=True))]
            losses = stack.train_losses(stack.forward(X[rows], uniforms), y[rows])
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
        trs, vas = stack.evaluate(data.train), stack.evaluate(data.val)
        share = (time.perf_counter() - epoch_started) / len(live)
        ended: dict[int, MemberOutcome] = {}
        for pos, (m, tr, va) in enumerate(zip(live, trs, vas, strict=True)):
            m.seconds += share
            if not (math.isfinite(tr[0]) and math.isfinite(va[0])):
                ended[pos] = TrialFailed(f"the loss became non-finite in epoch {epoch} (train {tr[0]}, val {va[0]})")
                continue
            m.curve_t.append(tr[0])
            m.curve_v.append(va[0])
            if m.on_epoch is not None:
                try:
                    m.on_epoch(epoch, tr[0], va[0])
                except Exception as exc:  # pruned, cancelled, or a bug: this member stops, the others go on
                    ended[pos] = exc
                    continue
            if va[0] < m.best[0] - min_delta or patience is None:
                m.best = (va[0], epoch)
                m.best_measures = (tr, va)
                if patience is not None:
                    m.best_state = stack.member_state(pos)
            elif epoch - m.best[1] >= patience:
                ended[pos] = result(pos, epoch)
        if ended:
            finish(ended)
    if live:
        finish({pos: result(pos, len(m.curve_t)) for pos, m in enumerate(live)})
    done: list[MemberOutcome] = []
    for o in outcomes:
        assert o is not None  # every member ends in the loop or after it
        done.append(o)
    return done

