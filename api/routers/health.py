"""``/healthz``: the service is up and its database answers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from api.deps import DatabaseDep
from api.errors import ApiError
from api.openapi import errors
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses=errors(503))
def read_health(db: DatabaseDep) -> Health:
    """Liveness: 200 when the database answers a query, 503 when it does not."""
    try:
        db.ping()
    except SQLAlchemyError as exc:
        raise ApiError(503, "database_unreachable", f"the database does not answer: {type(exc).__name__}") from exc
    return Health(status="ok", database="ok")
