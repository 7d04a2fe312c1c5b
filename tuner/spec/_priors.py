"""The search space part of the spec: a prior per regularization knob."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from tuner.spec._base import Strict, field_error

KNOBS = ("l1", "l2", "dropout", "input_dropout", "label_smoothing")


class KnobRange(Strict):
    """A prior over one knob: uniform or log-uniform in [low, high], optionally also exactly 0.

    The grid sampler needs a finite grid on every knob it searches: ``grid`` (that many points
    spread over [low, high], log-spaced for a log prior) or ``values`` (the points themselves;
    ``low`` and ``high`` may then be left out and default to the smallest and largest value).
    """

    low: float = Field(description="the smallest value; may be left out when 'values' is given")
    high: float = Field(description="the largest value; may be left out when 'values' is given")
    log: bool = Field(default=False, description="log-uniform between low and high (needs low > 0)")
    allow_zero: bool = Field(default=False, description="also try exactly 0 (the knob switched off)")
    per_layer: bool = Field(default=False, description="dropout only: one rate per hidden layer")
    grid: int | None = Field(default=None, ge=2, le=1000, description=(
        "the grid sampler: this many points over [low, high] (0 among them with allow_zero)"))
    values: list[float] | None = Field(default=None, description=(
        "the grid sampler: these points (low and high default to their smallest and largest)"))

    @model_validator(mode="before")
    @classmethod
    def _range_from_values(cls, data: Any) -> Any:
        """``values`` alone is a whole prior: its range is the values' own (0 apart, with allow_zero)."""
        if not isinstance(data, dict) or not isinstance(data.get("values"), list) or not data["values"]:
            return data
        values = data["values"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return data  # the field's own check names the bad value
        nonzero = [float(v) for v in values if v != 0] if data.get("allow_zero") else [float(v) for v in values]
        span = nonzero or [float(v) for v in values]
        return {"low": min(span), "high": max(span), **data}

    @model_validator(mode="after")
    def _check(self) -> KnobRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, but got (low={self.low}, high={self.high})")
        if self.low > self.high:
            raise ValueError(f"low <= high must hold, but got (low={self.low}, high={self.high})")
        if self.low < 0:
            raise ValueError(f"low >= 0 must hold, but got low={self.low}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log prior needs low > 0, but got low={self.low}; use allow_zero: true to reach 0")
        if self.grid is not None and self.values is not None:
            raise ValueError("give either 'grid' (a number of points) or 'values', not both")
        if self.values is not None:
            if not self.values:
                raise ValueError("'values' must not be empty")
            bad = [v for v in self.values if not (self.low <= v <= self.high or (v == 0 and self.allow_zero))]
            if bad:
                raise ValueError(f"every value must lie in [low, high] = [{self.low}, {self.high}], but got {bad}")
        return self

    def grid_values(self) -> list[float] | None:
        """The finite grid of this knob (log-spaced for a log prior), or None when it has none."""
        if self.values is not None:
            vals = sorted(set(self.values))
        elif self.grid is not None:
            n = self.grid - (1 if self.allow_zero else 0)
            if n < 1:
                vals = []
            elif n == 1:
                vals = [self.low]
            elif self.log:
                a, b = math.log10(self.low), math.log10(self.high)
                vals = [10 ** (a + (b - a) * i / (n - 1)) for i in range(n)]
            else:
                vals = [self.low + (self.high - self.low) * i / (n - 1) for i in range(n)]
        else:
            return None
        return sorted(set(([0.0] if self.allow_zero else []) + vals))


class Space(Strict):
    """A prior per regularization knob; every one optional."""

    l1: KnobRange | None = Field(default=None, description="L1 strength λ₁: adds λ₁·Σ|w| over the weights (not "
                                                           "biases or normalization); drives weights to exactly 0")
    l2: KnobRange | None = Field(default=None, description="L2 strength λ₂: adds λ₂·Σw² over the weights (not "
                                                           "biases or normalization)")
    dropout: KnobRange | None = Field(default=None, description="inverted dropout after each hidden layer, in "
                                                                "training only (mlp; per_layer for one per layer)")
    input_dropout: KnobRange | None = Field(default=None, description="inverted dropout on the inputs, in "
                                                                      "training only")
    label_smoothing: KnobRange | None = Field(default=None, description="the cross-entropy target's smoothing "
                                                                        "factor (classification only)")

    @model_validator(mode="after")
    def _check(self) -> Space:
        for knob in ("dropout", "input_dropout", "label_smoothing"):
            rng = getattr(self, knob)
            if rng is not None and rng.high >= 1.0:
                raise field_error(knob, f"high < 1 must hold, but got high={rng.high}")
        for knob in KNOBS:
            rng = getattr(self, knob)
            if rng is not None and rng.per_layer and knob != "dropout":
                raise field_error(knob, "per_layer applies to 'dropout' only")
        return self

    def ranges(self) -> dict[str, KnobRange]:
        return {k: r for k in KNOBS if (r := getattr(self, k)) is not None}
