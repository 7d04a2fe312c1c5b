"""Resuming a job safely: each stage's study remembers what its trials depend on.

A stage's trials are only comparable with trials trained on the same data, model,
training and seed, drawn from the same priors and scored on the same objectives,
from the same values the earlier stages fixed. Its study keeps a fingerprint of
those (a hash, and the parts in readable form); a run that would resume it with a
different spec is refused, naming what changed, instead of mixing two searches in
one report. Report settings and the sampler, pruner, backend and parallelism do not
change what a finished trial measured, so they may change between runs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import optuna

from tuner.errors import SpecError
from tuner.spec import JobSpec, StageSpec

__all__ = ["FINGERPRINT", "check_fingerprint", "delete_studies", "fingerprint_parts"]

FINGERPRINT = "fingerprint"
"""The study user attribute holding ``{"hash": …, "parts": {…}}``."""


def fingerprint_parts(spec: JobSpec, stage: StageSpec, fixed: dict[str, float]) -> dict[str, Any]:
    """What a stage's trials depend on, as JSON-ready data (field name → value)."""
    ranges = spec.search.space.ranges()
    return {
        "dataset": spec.dataset.model_dump(mode="json"),
        "model": spec.model.model_dump(mode="json"),
        "training": spec.training.model_dump(mode="json"),
        "seed": spec.seed,
        "search.objective": spec.search.objectives,
        "search.space": {k: ranges[k].model_dump(mode="json") for k in stage.params},
        "fixed by earlier stages": dict(sorted(fixed.items())),
        # an L1 path's points are set by its number and its end, not sampled: they are part of what it ran
        **({"path": {"trials": stage.trials, "path_eps": stage.path_eps}} if stage.path else {}),
    }


def _hash(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _changes(old: Any, new: Any, path: str) -> list[str]:
    """Where two JSON values differ, as ``path: old → new`` lines (mappings compared key by key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _changes(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [f"{path}: {json.dumps(old)} → {json.dumps(new)}"]


def check_fingerprint(study: optuna.Study, spec: JobSpec, stage: StageSpec, fixed: dict[str, float]) -> None:
    """Store the stage's fingerprint in a new study; refuse to resume one that was run with another spec.

    Raises:
        SpecError: the study holds trials of a different spec; the message names each change and how
            to start afresh.
    """
    parts = fingerprint_parts(spec, stage, fixed)
    # A round trip through JSON, so that what is compared is what the storage gives back (tuples → lists).
    parts = json.loads(json.dumps(parts))
    mine = {"hash": _hash(parts), "parts": parts}
    stored = study.user_attrs.get(FINGERPRINT)
    if stored is None:
        study.set_user_attr(FINGERPRINT, mine)
        return
    if stored.get("hash") == mine["hash"]:
        return
    changes = _changes(stored.get("parts", {}), parts, "")
    listed = "; ".join(changes) or "the fingerprint differs"
    field = changes[0].split(":")[0] if changes else ""
    raise SpecError.one(
        field if field.split(".")[0] in {"dataset", "model", "training", "seed", "search"} else "",
        f"study {study.study_name!r} in this storage holds trials of a different spec ({listed}); "
        f"resuming would mix two searches. Give the job a new name, or run it with --fresh to delete "
        f"this job's studies and start over",
    )


def delete_studies(storage: optuna.storages.BaseStorage, prefix: str) -> list[str]:
    """Delete every study named ``<prefix>/<stage>`` (a job's studies, for a fresh start).

    Returns:
        The names of the deleted studies.
    """
    names = [s.study_name for s in storage.get_all_studies() if s.study_name.startswith(f"{prefix}/")]
    for name in names:
        storage.delete_study(storage.get_study_id_from_name(name))
    return names
