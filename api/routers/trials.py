"""``/jobs/{id}/trials``: every trial of a job, read through Optuna from the shared database."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from optuna.trial import TrialState

from api import repository
from api.deps import SessionDep, StorageDep
from api.openapi import errors
from api.schemas import TrialsPublic
from api.studies import read_trials
from api.tables import AnyCaseStrEnum

router = APIRouter(prefix="/jobs", tags=["trials"])

class TrialStateName(AnyCaseStrEnum):
    """Optuna's trial states by name, in any case (``?state=complete`` is COMPLETE)."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    WAITING = "WAITING"


assert {s.name for s in TrialState} == {s.value for s in TrialStateName}, "Optuna's trial states changed"


@router.get("/{job_id}/trials", response_model=TrialsPublic, responses=errors(404, 422))
def read_job_trials(session: SessionDep, storage: StorageDep, job_id: str,
                    stage: Annotated[str | None, Query(max_length=64, description="only this stage")] = None,
                    state: Annotated[TrialStateName | None, Query(description="only trials in this state")] = None,
                    curves: Annotated[bool, Query(description="add per-epoch val losses, and train losses "
                                                               "where the job's search.train_curve is on")] = False,
                    ) -> TrialsPublic:
    """Every trial of every stage: stage, number, state, params, full config, losses, gap, sparsity, epochs.

    The trials are Optuna's own (what ``optuna.load_study`` sees); none are copied into the jobs table.
    """
    row = repository.get_job(session=session, job_id=job_id)
    items = read_trials(storage=storage, prefix=row.study_prefix, spec=row.spec, stage=stage,
                        state=TrialState[state.value] if state is not None else None, curves=curves)
    return TrialsPublic(items=items, count=len(items))
