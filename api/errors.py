"""The service's errors and the one place that maps them, and everything else, to HTTP.

Every error answers the same JSON shape, ``{"error": {"code", "message", "issues"}}``,
so a client handles one format whatever went wrong.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuner.errors import Issue, SpecError

__all__ = ["ApiError", "error_body", "install_error_handlers", "json_safe"]

log = logging.getLogger(__name__)

MAX_ECHO = 200  # characters of a received value an error may echo


def json_safe(value: Any, depth: int = 64) -> Any:
    """``value`` with NaN and infinities replaced by None and unknown objects by their repr (strict JSON).

    Containers nested deeper than ``depth`` become None.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if depth <= 0:
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth - 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth - 1) for v in value]
    return repr(value)


def _short(value: Any) -> Any:
    """The value an issue echoes back, or None when it is long (an error repeats no megabyte bodies)."""
    safe = json_safe(value, depth=4)
    return safe if len(json.dumps(safe)) <= MAX_ECHO else None


class ApiError(Exception):
    """An error the service answers on purpose: an HTTP status, a stable code, a message, field issues."""

    def __init__(self, status: int, code: str, message: str, issues: list[Issue] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.issues = issues or []
        self.headers = headers

    @classmethod
    def invalid_spec(cls, exc: SpecError) -> ApiError:
        fields = ", ".join(i.field or "(the body)" for i in exc.issues)
        return cls(422, "invalid_spec", f"the job spec breaks {len(exc.issues)} rule(s): {fields}", exc.issues)

    @classmethod
    def not_found(cls, job_id: str) -> ApiError:
        shown = job_id if len(job_id) <= 64 else job_id[:64] + "..."
        return cls(404, "job_not_found", f"no job has id {shown!r}")


def error_body(code: str, message: str, issues: list[Issue] | None = None) -> dict[str, Any]:
    listed = [{"field": i.field, "message": i.message, "value": _short(i.value)} for i in issues or []]
    return {"error": {"code": code, "message": message, "issues": listed}}


def _response(status: int, code: str, message: str, issues: list[Issue] | None = None,
              headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, issues), status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    """``("header", "idempotency-key")`` → ``header.idempotency-key``; list indices in brackets."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _response(exc.status, exc.code, exc.message, exc.issues, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    issues = [Issue(_field(tuple(e["loc"])), str(e["msg"]), e.get("input")) for e in exc.errors()]
    fields = ", ".join(i.field for i in issues)
    return _response(422, "invalid_request", f"the request breaks {len(issues)} rule(s): {fields}", issues)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
    return _response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _database_away(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database error in %s %s: %s", request.method, request.url.path, exc)
    return _response(503, "database_unavailable", "the database did not answer; try again shortly",
                     headers={"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _response(500, "internal_error", "the service failed unexpectedly; the error is in its log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_away)  # unreachable, locked, restarted
    app.add_exception_handler(Exception, _unexpected)
