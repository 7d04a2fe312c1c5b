"""What ``/openapi.json`` says beyond the routes: the error responses, and the JobSpec request body."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.schemas import ErrorBody
from tuner import JobSpec

__all__ = ["SPEC_BODY", "errors", "install_openapi"]

SPEC_TYPES = ("application/json", "application/yaml")
SPEC_BODY: dict[str, Any] = {"requestBody": {
    "required": True,
    "description": "a job spec (DESIGN.md), as JSON (application/json) or YAML (application/yaml)",
    "content": {t: {"schema": {"$ref": "#/components/schemas/JobSpec"}} for t in SPEC_TYPES},
}}

_WHY = {
    400: "the Host header names no host this service answers to (REGTUNE_ALLOWED_HOSTS)",
    401: "REGTUNE_API_TOKEN is set, and the request has no or a wrong 'Authorization: Bearer' token",
    403: "refused: no token and not a loopback address, a request from another site, or a read-only path",
    404: "no job has this id",
    409: "the job is in a state that does not allow this",
    413: "the request body is larger than 1 MiB (REGTUNE_MAX_BODY_BYTES)",
    415: "the body's Content-Type is neither JSON nor YAML",
    422: "a field broke a rule; each issue names the field path and the rule",
    500: "an unexpected failure; the service's log has the traceback",
    503: "the database cannot be reached (or is locked); Retry-After says when to try again",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the listed errors, plus 401, 422, 500 and 503 that any route may answer.

    Errors are JSON on every route, an HTML page's included (``content`` says so; ``model``
    alone would document them in the route's own media type).
    """
    json_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {s: {"model": ErrorBody, "description": _WHY[s], "content": json_body}
            for s in sorted({401, 422, 500, 503, *statuses})}


def install_openapi(app: FastAPI) -> None:
    """Generate the schema once, with JobSpec and its parts among the components."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            spec = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(spec.pop("$defs", {}))
            components["JobSpec"] = spec
            app.openapi_schema = schema
        return app.openapi_schema

    setattr(app, "openapi", openapi)  # noqa: B010 - FastAPI's documented way to customize the schema

