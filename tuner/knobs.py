"""The regularization knobs of one trial, as plain values the training loop reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Knobs", "fmt_params", "knob_of"]


def knob_of(param: str) -> str:
    """The knob a flat param belongs to: ``dropout_1`` (one layer's rate) to ``dropout``, others to themselves."""
    return "dropout" if param.startswith("dropout_") else param


def fmt_params(params: dict[str, float]) -> str:
    """``l2=3e-04, dropout=0.25`` for the knobs that are on; ``no regularization`` when none is."""
    on = [f"{k}={v:.2g}" if v < 0.01 else f"{k}={v:.3g}" for k, v in params.items() if v]
    return ", ".join(on) or "no regularization"


@dataclass(frozen=True)
class Knobs:
    """λ₁, λ₂, dropout per hidden layer, input dropout, label smoothing. All zero is the baseline."""

    l1: float = 0.0
    l2: float = 0.0
    dropout: tuple[float, ...] = ()
    input_dropout: float = 0.0
    label_smoothing: float = 0.0

    @classmethod
    def from_params(cls, params: Mapping[str, float], n_hidden: int) -> Knobs:
        """Read flat params: ``dropout`` (one rate for all layers) or ``dropout_0``, ``dropout_1``, …"""
        if "dropout" in params:
            dropout = (float(params["dropout"]),) * n_hidden
        else:
            dropout = tuple(float(params.get(f"dropout_{i}", 0.0)) for i in range(n_hidden))
        return cls(
            l1=float(params.get("l1", 0.0)),
            l2=float(params.get("l2", 0.0)),
            dropout=dropout,
            input_dropout=float(params.get("input_dropout", 0.0)),
            label_smoothing=float(params.get("label_smoothing", 0.0)),
        )

    def as_params(self, per_layer: bool = False) -> dict[str, float]:
        """Flat params, every knob present (0 where off)."""
        out = {"l1": self.l1, "l2": self.l2}
        if per_layer:
            out |= {f"dropout_{i}": p for i, p in enumerate(self.dropout)}
        else:
            out["dropout"] = self.dropout[0] if self.dropout else 0.0
        out |= {"input_dropout": self.input_dropout, "label_smoothing": self.label_smoothing}
        return out
