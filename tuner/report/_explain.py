"""Notes that keep the report honest: a choice at the edge of its prior, how stable L1's columns are,
and, with two objectives, where the choice sits on the Pareto front and why.
"""

from __future__ import annotations

import math
from typing import Any

from tuner.knobs import knob_of
from tuner.spec import JobSpec

__all__ = ["EDGE", "bound_hits", "pareto_choice", "stable_features"]

EDGE = 0.05  # the outer 5 % of a prior (on its log axis for a log prior)


def _position(value: float, low: float, high: float, log: bool) -> float:
    if log:
        span = math.log(high) - math.log(low)
        return (math.log(value) - math.log(low)) / span if span > 0 else 0.5
    return (value - low) / (high - low) if high > low else 0.5


def bound_hits(spec: JobSpec, params: dict[str, float], path: list[dict[str, Any]] | None = None,
               path_stage: bool = False) -> list[dict[str, Any]]:
    """Each chosen knob value in the outer 5 % of the range it was searched in, with a wider range to try.

    A value at the edge says the best may lie beyond it. A λ₁ chosen from an L1
    path is judged against the path's own range (λ_max down to λ_max·ε).

    Args:
        params: the chosen configuration's knobs (0 is off: no edge to hit).
        path: the report's ``l1_path``; path_stage: whether the choice came from it.
    """
    ranges = spec.search.space.ranges()
    hits = []
    for name, value in params.items():
        knob = knob_of(name)
        if value <= 0 or knob not in ranges:
            continue
        rng = ranges[knob]
        low, high, log, where = rng.low, rng.high, rng.log, f"search.space.{knob}"
        if knob == "l1" and path_stage and path:
            low, high, log, where = min(p["l1"] for p in path), max(p["l1"] for p in path), True, "the L1 path"
        pos = _position(value, low, high, log)
        if EDGE <= pos <= 1 - EDGE:
            continue
        edge = "low" if pos < EDGE else "high"
        if where == "the L1 path":
            if edge == "high":
                continue  # λ_max keeps no column: nothing lies beyond it
            suggest = "a smaller path_eps (the path stopped here)"
        elif edge == "low":
            suggest = f"low: {low / 10:.3g}" if log else f"low: {max(0.0, low - (high - low) / 2):.3g}"
        else:
            bound = high * 10 if log else high + (high - low) / 2
            if knob in ("dropout", "input_dropout", "label_smoothing"):
                bound = min(bound, 0.95)
            suggest = f"high: {bound:.3g}"
        hits.append({"param": name, "value": value, "low": low, "high": high, "edge": edge, "range": where,
                     "message": f"{name} = {value:.3g} sits at the {edge} end of {where} [{low:.3g}, {high:.3g}]"
                                f"; the best may lie beyond it: try {suggest}"})
    return hits


def stable_features(names: list[str], masks: list[list[bool]]) -> list[dict[str, Any]]:
    """The columns any seed's run kept, each with the share of seeds that kept it, most stable first.

    Args:
        masks: one features-kept mask per seed's run of the chosen configuration.
    """
    if not masks:
        return []
    n = len(masks)
    counts = [sum(m[i] for m in masks) for i in range(len(names))]
    out = [{"name": name, "seeds": c, "share": c / n} for name, c in zip(names, counts, strict=True) if c]
    return sorted(out, key=lambda f: -f["share"])


def pareto_choice(objectives: list[str], front: list[dict[str, Any]], points: list[dict[str, Any]],
                  chosen: dict[str, Any], rule: str) -> dict[str, Any] | None:
    """Where the chosen configuration sits on the (val loss, gap) front, and why it was taken.

    Returns None for a single objective.
    """
    if len(objectives) < 2:
        return None
    if not front:
        return {"on_front": False, "why": "no trial completed, so there is no front"}
    mine = next((p for p in points if p["stage"] == chosen["stage"] and p["trial"] == chosen["trial"]), None)
    low_loss, low_gap = front[0], min(front, key=lambda p: p["gap"])
    on = mine is not None and any(p["stage"] == mine["stage"] and p["trial"] == mine["trial"] for p in front)
    val, gap = (mine["val_loss"], mine["gap"]) if mine else (chosen["val_loss"], chosen["gap"])
    rank = sorted(p["val_loss"] for p in front).index(val) + 1 if on else None
    extremes = (f"the front runs from val loss {low_loss['val_loss']:.4g} (gap {low_loss['gap']:.4g}) to gap "
                f"{low_gap['gap']:.4g} (val loss {low_gap['val_loss']:.4g})")
    rule_text = ("the lowest mean val loss over seeds" if rule == "best" else
                 "the most regularized configuration within one standard error of the best mean val loss")
    if on:
        why = (f"the chosen configuration is point {rank} of the {len(front)} on the front, counted from the "
               f"lowest val loss: val loss {val:.4g}, gap {gap:.4g}; {extremes}. Along the front a smaller gap "
               f"costs val loss, and regtune takes {rule_text}: the gap measures overfitting, the val loss what "
               f"a user gets.")
    else:
        beaten = [p for p in front if p["val_loss"] <= val and p["gap"] <= gap]
        why = (f"the chosen configuration (val loss {val:.4g}, gap {gap:.4g}) is behind the front: "
               f"{len(beaten)} front point(s) beat it on both with the job's seed, but regtune takes {rule_text} "
               f"over the candidates re-trained with other seeds, not one seed's point; {extremes}.")
    return {"on_front": on, "rank": rank, "front_size": len(front), "val_loss": val, "gap": gap, "why": why}
