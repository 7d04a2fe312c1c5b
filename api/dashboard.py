"""The real Optuna dashboard over the service's storage, as an ASGI app to mount last, at ``/``; read-only.

``optuna_dashboard.wsgi`` serves ``/dashboard``, ``/api/...`` and ``/static/...``
itself, so it is mounted as the catch-all: regtune's own routes, matched first,
stay out of those paths. Given the storage regtune opened (SQLite in WAL mode with
a busy timeout), the dashboard reads while a runner writes, and never locks it out.

Three things the catch-all must not do. Write: its API can delete and rename a job's
studies and forge trials, so anything but GET/HEAD/OPTIONS is refused unless the caller
holds REGTUNE_ADMIN_TOKEN. Answer for the service: an unknown path or a wrong method
under regtune's own routes (``/jobs/...``, ``/healthz``) gets the service's JSON error,
not the dashboard's HTML 404. And take websockets, which a WSGI app cannot.
"""

from __future__ import annotations

import json

import optuna
from a2wsgi import WSGIMiddleware
from optuna_dashboard import wsgi
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import ADMIN, ROLE_KEY
from api.errors import error_body

__all__ = ["OWN_PATHS", "dashboard_app"]

# Paths that are the service's, never the dashboard's: whatever is not a route there is a JSON 404/405.
OWN_PATHS = ("/jobs", "/datasets", "/healthz", "/readyz", "/models", "/login", "/logout", "/docs", "/redoc",
             "/openapi.json")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _own(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OWN_PATHS)


def _allowed_methods(scope: Scope) -> list[str]:
    """The methods the app's own routes take on this path (a 405), or none (a 404); never the dashboard's."""
    routes = [r for r in getattr(scope.get("app"), "routes", []) if not isinstance(r, Mount)]
    return [m for m in _METHODS if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in routes)]


async def _answer(send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class ReadOnlyDashboard:
    """The dashboard's WSGI app behind the three refusals above."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "no websocket is served here"})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        shown = path if len(path) <= 100 else path[:100] + "..."
        if _own(path):
            if allowed := _allowed_methods(scope):
                await _answer(send, 405, "method_not_allowed", f"{method} is not allowed on {shown}; allowed: "
                              f"{', '.join(allowed)}", [(b"allow", ", ".join(allowed).encode())])
            else:
                await _answer(send, 404, "not_found", f"this service has no route {shown}", [])
            return
        if method not in _READS and scope.get(ROLE_KEY) != ADMIN:
            await _answer(send, 403, "read_only", f"the dashboard is read-only: {method} {shown} would change a "
                          "study; writes need the admin token (REGTUNE_ADMIN_TOKEN)", [])
            return
        await self.app(scope, receive, send)


def dashboard_app(storage: optuna.storages.BaseStorage) -> ASGIApp:
    app: ASGIApp = WSGIMiddleware(wsgi(storage))  # type: ignore[assignment]
    return ReadOnlyDashboard(app)
