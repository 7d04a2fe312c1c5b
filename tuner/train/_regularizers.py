"""L1 and L2 on weights only (never biases or normalization parameters), and sparsity measures.

L1 is applied as a proximal step (soft-thresholding) after each optimizer step,
so weights reach exact zeros instead of hovering around them. With Adam the
threshold is scaled per weight by Adam's own step size, which keeps a weight
at zero exactly when its averaged gradient is smaller than λ₁ (the L1
optimality condition).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["features_kept_mask", "l2_penalty", "prox_l1_", "sparsity"]


def l2_penalty(weights: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
    """λ₂·Σw² over the given weight tensors."""
    total = torch.zeros((), dtype=weights[0].dtype if weights else torch.float32)
    if lam > 0.0:
        for w in weights:
            total = total + w.pow(2).sum()
    return lam * total


def _step_sizes(w: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor | float:
    group = next(g for g in optimizer.param_groups if any(p is w for p in g["params"]))
    lr = float(group["lr"])
    state = optimizer.state.get(w, {})
    if "exp_avg_sq" not in state:  # SGD: one step size for every weight
        return lr
    beta2 = float(group["betas"][1])
    step = float(state["step"])
    denom = (state["exp_avg_sq"] / (1.0 - beta2**step)).sqrt_().add_(float(group["eps"]))
    return lr / denom


@torch.no_grad()
def prox_l1_(weights: Sequence[torch.Tensor], lam: float | torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """Soft-threshold each weight in place: w ← sign(w)·max(|w| − step·λ₁, 0).

    ``lam`` may be a tensor that broadcasts against each weight: one λ₁ per member of a stacked model.
    """
    if not isinstance(lam, torch.Tensor) and lam <= 0.0:
        return
    for w in weights:
        threshold = torch.as_tensor(_step_sizes(w, optimizer) * lam, dtype=w.dtype)
        w.sub_(torch.clamp(w, min=-threshold, max=threshold))  # the same numbers, in two passes instead of five


@torch.no_grad()
def sparsity(weights: Sequence[torch.Tensor]) -> float:
    """The fraction of weights that are exactly zero."""
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    return zeros / total if total else 0.0


@torch.no_grad()
def features_kept_mask(first_weight: torch.Tensor) -> list[bool]:
    """Which input features still reach the model: a column of the first layer with any non-zero weight."""
    return [bool(v) for v in (first_weight != 0).any(dim=0).tolist()]
