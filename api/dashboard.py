"""The real Optuna dashboard over the service's storage, as an ASGI app to mount last, at ``/``.

``optuna_dashboard.wsgi`` serves ``/dashboard``, ``/api/...`` and ``/static/...``
itself, so it is mounted as the catch-all: regtune's own routes, matched first,
stay out of those paths. Given the storage regtune opened (SQLite in WAL mode with
a busy timeout), the dashboard reads while a runner writes, and never locks it out.
"""

from __future__ import annotations

import optuna
from a2wsgi import WSGIMiddleware
from optuna_dashboard import wsgi
from starlette.types import ASGIApp

__all__ = ["dashboard_app"]


def dashboard_app(storage: optuna.storages.BaseStorage) -> ASGIApp:
    app: ASGIApp = WSGIMiddleware(wsgi(storage))  # type: ignore[assignment]
    return app
