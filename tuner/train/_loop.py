"""The training loop: tensors in memory (or batches streamed from disk), L1/L2 on weights only, plain losses
measured in eval mode."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuner.devices import resolve_device
from tuner.errors import Cancelled, TrialFailed
from tuner.knobs import Knobs
from tuner.registry import OPTIMIZERS
from tuner.spec import ModelSpec, TrainingSpec
from tuner.train._data import Dataset, Split
from tuner.train._feed import StreamFeed, split_chunks
from tuner.train._models import MLP, dropout_generators
from tuner.train._module import build_any, decay_weights, has_batch_norm
from tuner.train._regularizers import features_kept_mask, l2_penalty, prox_l1_, sparsity
from tuner.train._stream import StreamSplit

__all__ = ["EpochCallback", "TrainResult", "check_finite", "evaluate", "kept_train_measure", "loss_standard_error",
           "train"]

EpochCallback = Callable[[int, float | None, float], None]
"""Called after each epoch with (epoch, train_loss, val_loss); may raise to stop (pruning, cancel). The train
loss is None in a run that measures it only at the epoch it keeps (``train_curve=False``)."""

STOP_POLL_S = 1.0
"""How often ``should_stop`` is asked inside an epoch: a long epoch (large data, batch size 1) stops within it."""


@dataclass
class TrainResult:
    """What one training run measured, at the epoch whose model it keeps."""

    train_loss: float
    val_loss: float
    train_acc: float | None
    val_acc: float | None
    sparsity: float
    features_mask: list[bool]
    epochs: int
    best_epoch: int
    seconds: float
    curve_train: list[float] = field(default_factory=list)
    curve_val: list[float] = field(default_factory=list)
    model: nn.Module | None = None  # the MLP, or a plug-in wrapped (``PluginModel``)
    val_loss_se: float | None = None  # cross-validation: the standard error of the mean over the folds
    fold_val_losses: list[float] = field(default_factory=list)

    @property
    def gap(self) -> float:
        return self.val_loss - self.train_loss

    @property
    def features_kept(self) -> int:
        return sum(self.features_mask)

    def metrics(self) -> dict[str, float | int | None]:
        """The user attributes every trial carries (DESIGN.md)."""
        return {
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "gap": self.gap,
            "train_acc": self.train_acc,
            "val_acc": self.val_acc,
            "sparsity": self.sparsity,
            "features_kept": self.features_kept,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 3),
        }


def plain_loss(out: torch.Tensor, y: torch.Tensor, task: str, smoothing: float = 0.0) -> torch.Tensor:
    if task == "classification":
        return F.cross_entropy(out, y, label_smoothing=smoothing)
    return F.mse_loss(out.squeeze(-1), y)


def _on_device(model: nn.Module, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's tensors where the model lives (data stays on the CPU between uses)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return split.X.to(device), split.y.to(device)


@torch.no_grad()
def _streamed_losses(model: nn.Module, split: StreamSplit, task: str) -> tuple[float, float, float]:
    """Per-example plain losses over a split streamed from disk, a chunk at a time: (sum, sum of squares, hits)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    total, squares, hits = 0.0, 0.0, 0.0
    for X, y in split_chunks(split):
        X, y = X.to(device), y.to(device)
        out = model(X).float()
        losses = (F.cross_entropy(out, y, reduction="none") if task == "classification"
                  else (out.squeeze(-1) - y).pow(2)).double()
        total, squares = total + float(losses.sum()), squares + float(losses.pow(2).sum())
        if task == "classification":
            hits += float((out.argmax(dim=1) == y).sum())
    return total, squares, hits


@torch.no_grad()
def loss_standard_error(model: nn.Module, split: Split, task: str) -> float:
    """The standard error of the mean plain loss over the split's examples (its sampling noise)."""
    model.eval()
    if isinstance(split, StreamSplit):
        n = len(split)
        total, squares, _ = _streamed_losses(model, split, task)
        return math.sqrt(max(squares - total * total / n, 0.0) / (n - 1) / n) if n > 1 else 0.0
    X, y = _on_device(model, split)
    out = model(X).float()
    losses = (F.cross_entropy(out, y, reduction="none") if task == "classification"
              else (out.squeeze(-1) - y).pow(2))
    return float(losses.std() / math.sqrt(len(split))) if len(split) > 1 else 0.0


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, task: str) -> tuple[float, float | None]:
    """Plain loss (unsmoothed, unpenalized) and accuracy (None for regression), in eval mode, in fp32."""
    model.eval()
    if isinstance(split, StreamSplit):
        total, _, hits = _streamed_losses(model, split, task)
        return total / len(split), hits / len(split) if task == "classification" else None
    X, y = _on_device(model, split)
    out = model(X).float()
    loss = float(plain_loss(out, y, task))
    acc = float((out.argmax(dim=1) == y).float().mean()) if task == "classification" else None
    return loss, acc


def check_finite(epoch: int, tr: tuple[float, float | None] | None, va: tuple[float, float | None]) -> None:
    """Raise ``TrialFailed`` when an epoch's measured loss is NaN or infinite (``tr`` None: not measured)."""
    if tr is None:
        if not math.isfinite(va[0]):
            raise TrialFailed(f"the loss became non-finite in epoch {epoch} (val {va[0]})")
    elif not (math.isfinite(tr[0]) and math.isfinite(va[0])):
        raise TrialFailed(f"the loss became non-finite in epoch {epoch} (train {tr[0]}, val {va[0]})")


def kept_train_measure(model: nn.Module, data: Dataset, epoch: int) -> tuple[float, float | None]:
    """The plain train loss and accuracy of the weights a run keeps, measured once at its end (a run without
    a train curve); ``TrialFailed`` when the loss is not finite."""
    tr = evaluate(model, data.train, data.task)
    if not math.isfinite(tr[0]):
        raise TrialFailed(f"the train loss of the weights kept (epoch {epoch}) is {tr[0]}")
    return tr


# The optimizers ``tuner.registry.OPTIMIZERS`` names: (model, training spec, knobs) → optimizer.

def adam(model: nn.Module, spec: TrainingSpec, knobs: Knobs) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=spec.lr)


def adamw(model: nn.Module, spec: TrainingSpec, knobs: Knobs) -> torch.optim.Optimizer:
    """Decoupled decay on weights only; 2λ₂ matches the gradient of λ₂·Σw² (so ``train`` adds no L2 term)."""
    weights = decay_weights(model)
    ids = {id(w) for w in weights}
    others = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.AdamW([{"params": weights, "weight_decay": 2.0 * knobs.l2},
                              {"params": others, "weight_decay": 0.0}], lr=spec.lr)


def sgd(model: nn.Module, spec: TrainingSpec, knobs: Knobs) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)


def _features_mask(model: nn.Module, weights: list[nn.Parameter], n_features: int) -> list[bool]:
    """Input features with a non-zero weight: read off an MLP's first layer; a plug-in keeps them all."""
    if isinstance(model, MLP):
        return features_kept_mask(weights[0])
    return [True] * n_features


def _in_memory(X: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches ``order[start:start + batch_size]`` of tensors in memory."""
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        yield X[rows], y[rows]


def train(data: Dataset, model_spec: ModelSpec, spec: TrainingSpec, knobs: Knobs, seed: int,
          on_epoch: EpochCallback | None = None, should_stop: Callable[[], bool] | None = None,
          init: dict[str, torch.Tensor] | None = None, train_curve: bool = True) -> TrainResult:
    """Train one model under ``knobs`` and return its measurements at the kept epoch.

    Args:
        data: train and val splits (the test split is never read here).
        on_epoch: called with (epoch, train_loss, val_loss) after each epoch; may raise to stop.
        should_stop: asked between batches, about once a second (``STOP_POLL_S``); True stops the run.
        init: start from these weights (a ``state_dict``) instead of a fresh draw: the L1 path's warm start.
        train_curve: measure the plain train loss after every epoch (``curve_train``, ``on_epoch``'s
            second argument). False: it is measured once, from the weights of the epoch kept, the same
            value (the gap is exact), and ``on_epoch`` gets None for it: a search's trials skip an
            eval-mode pass over the training split per epoch (``search.train_curve``).

    Raises:
        TrialFailed: a loss became NaN or infinite.
        Cancelled: ``should_stop`` answered True in the middle of an epoch.
    """
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    device = resolve_device(spec.device)
    model = build_any(model_spec, data, gen)  # built on the CPU: the same start on any device
    # an MLP draws each dropout site's masks from a stream of its own (what lets K trials batch)
    masks = dropout_generators(seed, len(model.hidden)) if isinstance(model, MLP) else gen
    if init is not None:
        model.load_state_dict(init)
    model = model.to(device)
    opt = OPTIMIZERS.load(spec.optimizer)(model, spec, knobs)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=spec.precision == "fp16")
    weights = decay_weights(model)
    batch_norm = has_batch_norm(model)
    add_l2 = spec.optimizer != "adamw"
    n = len(data.train)
    # data over REGTUNE_MEMORY_DATA_BYTES: the same batches, read from disk by DataLoader workers
    feed = StreamFeed(data.train, spec.batch_size, device) if isinstance(data.train, StreamSplit) else None
    X, y = (data.train.X, data.train.y) if feed is not None else (data.train.X.to(device), data.train.y.to(device))
    patience = spec.early_stopping.patience if spec.early_stopping else None
    min_delta = spec.early_stopping.min_delta if spec.early_stopping else 0.0
    curve_t: list[float] = []
    curve_v: list[float] = []
    # val loss, epoch, saved state, (train loss, acc), (val loss, acc) of the epoch kept; the train measure is
    # None without a train curve, and taken from the weights kept at the end
    best: tuple[float, int, dict[str, Any] | None, tuple[float, float | None] | None, tuple[float, float | None]] = (
        math.inf, 0, None, None, (0.0, None))
    epoch = 0
    next_poll = time.monotonic() + STOP_POLL_S
    try:
        for epoch in range(1, spec.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=gen)
            batches = (feed.batches(order) if feed is not None
                       else _in_memory(X, y, order.to(device), spec.batch_size))
            for xb, yb in batches:
                if should_stop is not None and time.monotonic() >= next_poll:
                    if should_stop():
                        raise Cancelled(f"cancelled during epoch {epoch}")
                    next_poll = time.monotonic() + STOP_POLL_S
                if len(yb) < 2 and batch_norm:
                    continue  # batch norm cannot normalize a single row
                with torch.autocast(device.type, dtype=half) if half is not None else contextlib.nullcontext():
                    out = model(xb, knobs.dropout, knobs.input_dropout, masks)
                loss = plain_loss(out.float(), yb, data.task, knobs.label_smoothing)
                if add_l2:
                    loss = loss + l2_penalty(weights, knobs.l2)
                if not torch.isfinite(loss):
                    raise TrialFailed(f"the training loss became {float(loss.detach())} in epoch {epoch}")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                prox_l1_(weights, knobs.l1, opt)
            tr = evaluate(model, data.train, data.task) if train_curve else None
            va = evaluate(model, data.val, data.task)
            check_finite(epoch, tr, va)
            if tr is not None:
                curve_t.append(tr[0])
            curve_v.append(va[0])
            if on_epoch is not None:
                on_epoch(epoch, None if tr is None else tr[0], va[0])
            if va[0] < best[0] - min_delta or patience is None:
                state = copy.deepcopy(model.state_dict()) if patience is not None else None
                best = (va[0], epoch, state, tr, va)
            elif epoch - best[1] >= patience:
                break
    finally:
        if feed is not None:
            feed.close()
    _, best_epoch, state, tr, va = best
    if state is not None:
        model.load_state_dict(state)
    if tr is None:
        tr = kept_train_measure(model, data, best_epoch)
    model.eval()
    return TrainResult(
        train_loss=tr[0], val_loss=va[0], train_acc=tr[1], val_acc=va[1],
        sparsity=sparsity(weights), features_mask=_features_mask(model, weights, data.n_features),
        epochs=epoch, best_epoch=best_epoch, seconds=time.perf_counter() - started,
        curve_train=curve_t, curve_val=curve_v, model=model,
    )
