"""A job's trials, read from Optuna's tables in the same database: never copied into the jobs table.

``read_trials`` goes through Optuna's storage API (what ``optuna.load_study`` sees).
``read_progress``, asked on every poll of ``GET /jobs/{id}``, counts trials by state
and reads the best value with two aggregate queries over Optuna's own table models,
instead of loading every trial with its learning curves.
"""

from __future__ import annotations

import json
import math
from datetime import UTC
from typing import Any

import optuna
from optuna.storages._rdb import models as om
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import json_safe
from api.schemas import BestSoFar, StageProgress, TrialPublic
from tuner import study_name
from tuner.stages import BUDGET_STATES

__all__ = ["read_progress", "read_trials", "stage_names"]

_NUMBERS = ("train_loss", "val_loss", "gap", "train_acc", "val_acc", "sparsity", "seconds")
_COUNTS = ("features_kept", "epochs", "best_epoch")


def stage_names(spec: dict[str, Any]) -> list[str]:
    return [stage["name"] for stage in spec["search"]["stages"]]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_progress(*, session: Session, prefix: str, spec: dict[str, Any]) -> tuple[list[StageProgress],
                                                                                     BestSoFar | None]:
    """Per-stage trial counts and best values, and the best COMPLETE trial of the job so far."""
    stages = spec["search"]["stages"]
    names = {study_name(prefix, s["name"]): s for s in stages}
    counts: dict[str, dict[TrialState, int]] = {name: {} for name in names}
    for name, state, n in session.execute(
        select(om.StudyModel.study_name, om.TrialModel.state, func.count())
        .join(om.TrialModel, om.TrialModel.study_id == om.StudyModel.study_id)
        .where(om.StudyModel.study_name.in_(names)).group_by(om.StudyModel.study_name, om.TrialModel.state)
    ):
        counts[name][state] = n
    scored = (
        select(om.StudyModel.study_name, om.TrialModel.trial_id, om.TrialModel.number, om.TrialValueModel.value)
        .join(om.TrialModel, om.TrialModel.study_id == om.StudyModel.study_id)
        .join(om.TrialValueModel, om.TrialValueModel.trial_id == om.TrialModel.trial_id)
        .where(om.StudyModel.study_name.in_(names), om.TrialModel.state == TrialState.COMPLETE,
               om.TrialValueModel.objective == 0, om.TrialValueModel.value.is_not(None))
    )
    per_study = scored.subquery()
    best_value = dict(session.execute(
        select(per_study.c.study_name, func.min(per_study.c.value)).group_by(per_study.c.study_name)).all())
    best = session.execute(scored.order_by(om.TrialValueModel.value, om.TrialModel.trial_id).limit(1)).first()
    progress = []
    for name, s in names.items():
        n = counts[name]
        progress.append(StageProgress(
            name=s["name"], study_name=name, params=list(s.get("params", [])), total=s["trials"],
            done=sum(n.get(state, 0) for state in BUDGET_STATES), complete=n.get(TrialState.COMPLETE, 0),
            running=n.get(TrialState.RUNNING, 0), pruned=n.get(TrialState.PRUNED, 0), failed=n.get(TrialState.FAIL, 0),
            best_value=_finite(best_value.get(name))))
    if best is None:
        return progress, None
    config = session.scalar(select(om.TrialUserAttributeModel.value_json).where(
        om.TrialUserAttributeModel.trial_id == best.trial_id, om.TrialUserAttributeModel.key == "config"))
    return progress, BestSoFar(stage=names[best.study_name]["name"], study_name=best.study_name, trial=best.number,
                               value=_finite(best.value), params=json.loads(config) if config else {})


def _public(trial: FrozenTrial, stage: str, name: str, curves: bool) -> TrialPublic:
    attrs = trial.user_attrs
    row: dict[str, Any] = {key: _finite(attrs.get(key)) for key in _NUMBERS}
    row |= {key: int(attrs[key]) if isinstance(attrs.get(key), (int, float)) else None for key in _COUNTS}
    if curves:
        row |= {"train_curve": json_safe(attrs.get("train_curve")), "val_curve": json_safe(attrs.get("val_curve"))}
    reason = attrs.get("fail_reason")
    return TrialPublic(
        stage=stage, study_name=name, number=trial.number, state=trial.state.name,
        values=[_finite(v) for v in trial.values] if trial.values is not None else None,
        params=json_safe(trial.params), config=json_safe(attrs.get("config") or {}),
        fail_reason=str(reason) if reason is not None else None, interrupted=bool(attrs.get("interrupted", False)),
        datetime_start=trial.datetime_start.astimezone(UTC) if trial.datetime_start else None,
        datetime_complete=trial.datetime_complete.astimezone(UTC) if trial.datetime_complete else None,
        **row,
    )


def read_trials(*, storage: optuna.storages.BaseStorage, prefix: str, spec: dict[str, Any],
                stage: str | None = None, state: TrialState | None = None, curves: bool = False) -> list[TrialPublic]:
    """Every trial of the job's stages, in stage order then trial number; optionally one stage or state."""
    out: list[TrialPublic] = []
    for name_of_stage in stage_names(spec):
        if stage is not None and name_of_stage != stage:
            continue
        name = study_name(prefix, name_of_stage)
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:  # the stage has not started yet
            continue
        states = (state,) if state is not None else None
        trials = storage.get_all_trials(study_id, deepcopy=False, states=states)
        out.extend(_public(t, name_of_stage, name, curves) for t in sorted(trials, key=lambda t: t.number))
    return out
