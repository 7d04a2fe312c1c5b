"""The FastAPI app: wiring only. ``uvicorn --factory api.main:create_app`` or ``regtune serve``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from api import login
from api.auth import Credentials
from api.dashboard import dashboard_app
from api.db import Database, migrate
from api.docs import install_docs
from api.errors import install_error_handlers
from api.guard import Guard
from api.job_view import JobViews
from api.middleware import BodyLimit
from api.openapi import install_openapi
from api.routers import datasets, health, jobs, models, pages, reports, trials
from api.settings import Settings, get_settings
from tuner import open_storage

__all__ = ["create_app"]

DESCRIPTION = """Staged hyperparameter search for regularization (L1, L2, dropout, label smoothing).

Submit a job spec to `POST /jobs`; runners claim it, run its stages as Optuna studies in the
same database, and store the report. `/dashboard` is the Optuna dashboard over that database.
Every error answers `{"error": {"code", "message", "issues": [{"field", "message", "value"}]}}`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app over ``settings.database_url``, its tables migrated; the dashboard mounted last, at ``/``."""
    settings = settings or get_settings()
    db = Database.open(settings.database_url)
    migrate(db)
    storage = open_storage(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        gc.freeze()  # the libraries' objects (torch, optuna, ...) are kept out of every later collection
        yield
        db.close()

    app = FastAPI(title="regtune", version="0.1.0", description=DESCRIPTION, lifespan=lifespan, docs_url=None,
                  redoc_url=None)  # install_docs serves them with local assets
    app.state.settings, app.state.db, app.state.storage = settings, db, storage
    app.state.job_views = JobViews()
    app.state.credentials = Credentials.of(settings)
    install_error_handlers(app)
    for module in (health, jobs, trials, reports, models, datasets, pages, login):
        app.include_router(module.router)
    install_openapi(app)
    install_docs(app)
    app.mount("/", dashboard_app(storage))  # last: the catch-all for /dashboard, /api/..., /static/...
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, streamed=(datasets.STREAMED,))
    # added last: the outermost, before anything is read. Without a token it serves this machine only,
    # however the app is started (`regtune serve`, or `uvicorn --factory api.main:create_app --host ...`).
    app.add_middleware(Guard, settings=settings)
    return app
