"""``/healthz``: the service is up and its database answers. ``/readyz``: and queued jobs will be run."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from api.deps import DatabaseDep, SessionDep, SettingsDep
from api.errors import ApiError
from api.openapi import errors
from api.runners_table import read_readiness
from api.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses=errors(503))
def read_health(db: DatabaseDep) -> Health:
    """Liveness: 200 when the database answers a query, 503 when it does not."""
    try:
        db.ping()
    except SQLAlchemyError as exc:
        raise ApiError(503, "database_unreachable", f"the database does not answer: {type(exc).__name__}") from exc
    return Health(status="ok", database="ok")


@router.get("/readyz", response_model=Ready, responses=errors(503))
def read_ready(session: SessionDep, settings: SettingsDep) -> Ready:
    """Readiness: 503 with the reason when jobs are queued and no runner was seen lately (none would run them)."""
    readiness = read_readiness(session=session, within_seconds=settings.runner_seen_seconds)
    if not readiness.ready:
        raise ApiError(503, "no_runner", readiness.reason(), headers={"Retry-After": "10"})
    return Ready(status="ready", queued=readiness.queued, runners=readiness.runners)
