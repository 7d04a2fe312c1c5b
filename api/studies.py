"""A job's trials, read from Optuna's tables in the same database: never copied into the jobs table.

``read_trials`` goes through Optuna's storage API (what ``optuna.load_study`` sees).
``read_progress``, asked on every poll of ``GET /jobs/{id}``, counts trials by state
and reads the best value with two prebuilt queries over Optuna's own table models,
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
from sqlalchemy import BindParameter, and_, bindparam, func, select
from sqlalchemy.orm import Session

from api.errors import json_safe
from api.schemas import BestSoFar, StageProgress, TrialPublic
from tuner import study_name
from tuner.search import BUDGET_STATES
from tuner.spec import StageSpec

__all__ = ["Progress", "read_progress", "read_trials", "stage_studies"]

_NUMBERS = ("train_loss", "val_loss", "gap", "train_acc", "val_acc", "sparsity", "seconds")
_INTS = ("features_kept", "epochs", "best_epoch")


def stage_studies(*, prefix: str, spec: dict[str, Any]) -> list[tuple[StageSpec, str]]:
    """Each stage of a stored spec, in order, with its study's name (``tuner.study_name``).

    Args:
        spec: a job's spec as stored, completed when it was queued (default stages, baseline first).
    """
    return [(stage, study_name(prefix, stage.name))
            for stage in (StageSpec.model_validate(s) for s in spec["search"]["stages"])]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


S, T, V, A = om.StudyModel, om.TrialModel, om.TrialValueModel, om.TrialUserAttributeModel
_NAMES: BindParameter[list[str]] = bindparam("names", expanding=True)
# Built once: per stage and state, the trial count and the lowest first objective.
_COUNTS = (select(S.study_name, T.state, func.count(), func.min(V.value))
           .join(T, T.study_id == S.study_id).outerjoin(V, and_(V.trial_id == T.trial_id, V.objective == 0))
           .where(S.study_name.in_(_NAMES)).group_by(S.study_name, T.state))
# The COMPLETE trial with the lowest first objective over all stages, with its configuration.
_BEST = (select(S.study_name, T.number, V.value, A.value_json)
         .join(T, T.study_id == S.study_id).join(V, and_(V.trial_id == T.trial_id, V.objective == 0))
         .outerjoin(A, and_(A.trial_id == T.trial_id, A.key == "config"))
         .where(S.study_name.in_(_NAMES), T.state == TrialState.COMPLETE, V.value.is_not(None))
         .order_by(V.value, T.trial_id).limit(1))

Progress = tuple[list[StageProgress], BestSoFar | None]


def read_progress(*, session: Session, prefix: str, spec: dict[str, Any]) -> Progress:
    """Per-stage trial counts and best values, and the best COMPLETE trial of the job so far."""
    names = {name: stage for stage, name in stage_studies(prefix=prefix, spec=spec)}
    counts: dict[str, dict[TrialState, int]] = {name: {} for name in names}
    lowest: dict[str, float] = {}
    for name, state, count, low in session.execute(_COUNTS, {"names": list(names)}):
        counts[name][state] = count
        if state == TrialState.COMPLETE and low is not None:
            lowest[name] = low
    progress = []
    for name, s in names.items():
        n = counts[name]
        progress.append(StageProgress(
            name=s.name, study_name=name, params=list(s.params), total=s.trials,
            done=sum(n.get(state, 0) for state in BUDGET_STATES), complete=n.get(TrialState.COMPLETE, 0),
            running=n.get(TrialState.RUNNING, 0), pruned=n.get(TrialState.PRUNED, 0), failed=n.get(TrialState.FAIL, 0),
            best_value=_finite(lowest.get(name))))
    if not lowest:
        return progress, None
    best = session.execute(_BEST, {"names": list(names)}).one()
    return progress, BestSoFar(stage=names[best.study_name].name, study_name=best.study_name, trial=best.number,
                               value=_finite(best.value), params=json.loads(best.value_json or "{}"))


def _public(trial: FrozenTrial, stage: str, name: str, curves: bool) -> TrialPublic:
    attrs = trial.user_attrs
    row: dict[str, Any] = {key: _finite(attrs.get(key)) for key in _NUMBERS}
    row |= {key: int(attrs[key]) if isinstance(attrs.get(key), (int, float)) else None for key in _INTS}
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
    for this, name in stage_studies(prefix=prefix, spec=spec):
        if stage is not None and this.name != stage:
            continue
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:  # the stage has not started yet
            continue
        states = (state,) if state is not None else None
        trials = storage.get_all_trials(study_id, deepcopy=False, states=states)
        out.extend(_public(t, this.name, name, curves) for t in sorted(trials, key=lambda t: t.number))
    return out
