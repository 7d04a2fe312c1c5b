"""The service's commands: ``serve``, ``worker``, ``submit``, ``status``.

Imports stay inside the command functions: ``regtune run`` builds this parser
too, and must not pay for (or depend on) the service's modules.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["add_service_commands"]

log = logging.getLogger("regtune")
RUNNER_NICE = 19  # the embedded runner yields the CPU to the API, so polls stay fast while it trains
RUNNER_STOP_S = 120  # how long `serve` waits for its runner to finish an epoch at shutdown
# What the `service` extra installs (pyproject.toml): a library-only install has none of these
SERVICE_MODULES = frozenset({"fastapi", "starlette", "uvicorn", "a2wsgi", "httpx", "pydantic_settings",
                             "optuna_dashboard"})


def _needs_service(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Say which extra to install when a service command is run where only the library is installed."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing not in SERVICE_MODULES:
                raise
            print(f"regtune {args.command}: the service's libraries are not installed ({missing} is missing); "
                  f"install them with: pip install 'regtune[service]'", file=sys.stderr)
            return 2

    return run


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _settings() -> Any:
    from pydantic import ValidationError

    from api.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:  # each rule by its variable's name; never the value (it may be a token)
        lines = [f"  {'REGTUNE_' + '_'.join(map(str, e['loc'])).upper() if e['loc'] else 'settings'}: "
                 f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors(include_input=False)]
        print("regtune: bad settings in the environment:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def _start_runner() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "api.cli", "worker", "--nice", str(RUNNER_NICE)])


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _cmd_serve(args: argparse.Namespace) -> int:
    _logging()
    settings = _settings()
    from api.settings import LOCAL_HOSTS

    if settings.token() is None:
        if args.host not in LOCAL_HOSTS:
            print(f"regtune: refusing to serve on {args.host} without authentication; set REGTUNE_API_TOKEN, "
                  f"or serve on 127.0.0.1", file=sys.stderr)
            return 2
        log.warning("REGTUNE_API_TOKEN is not set: serving on %s only, without authentication", args.host)
    import uvicorn

    from api.db import Database, migrate
    from api.supervisor import RunnerSupervisor

    db = Database.open(settings.database_url)
    migrate(db)  # before the runner starts, so the two never race to create the tables
    db.close()
    runner = None if args.no_runner else RunnerSupervisor(_start_runner)  # a runner that dies is replaced
    if runner is not None:
        runner.start()
    log.info("serving http://%s:%d (the dashboard at /dashboard, the API's docs at /docs) over %s%s", args.host,
             args.port, db.engine.url.render_as_string(hide_password=True),
             "" if runner else "; no runner here: start `regtune worker`s")
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; with this handler in place
    # that ends in SystemExit here, so the embedded runner is stopped rather than left behind
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run("api.main:create_app", factory=True, host=args.host, port=args.port, log_level="info",
                    access_log=args.access_log)
    finally:
        if runner is not None:
            runner.stop(RUNNER_STOP_S)  # it finishes the epoch and gives the job back to the queue
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    _logging()
    settings = _settings()
    if args.nice:
        os.nice(args.nice)
    from api.worker import Runner

    runner = Runner(settings)
    runner.install_signal_handlers()
    try:
        runner.run_forever()
    except KeyboardInterrupt:  # a second signal: stop now; the lease runs out and another runner resumes
        return 130
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from api.client import Client, ClientError, progress_line, summary

    client = Client(args.server)
    job: dict[str, Any] = {"id": "?", "status": "unsent"}
    try:
        job = client.submit(Path(args.spec), args.idempotency_key,
                            Path(args.data) if args.data else None)
        print(f"job {job['id']} {job['status']}: {client.server}/jobs/{job['id']}")
        if not args.wait:
            return 0
        shown = ""
        while job["status"] in ("queued", "running"):
            time.sleep(args.interval)
            job = client.job(job["id"])
            if (line := progress_line(job)) != shown:
                print(line, flush=True)
                shown = line
        report = client.report(job["id"]) if job["status"] == "succeeded" else None
    except ClientError as exc:
        print(f"regtune: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nregtune: stopped waiting; the job goes on (regtune status {job['id']})", file=sys.stderr)
        return 130
    print(summary(job, report))
    return 0 if job["status"] == "succeeded" else 1


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from api.client import Client, ClientError, progress_line, summary

    client = Client(args.server)
    try:
        job = client.job(args.id)
        report = client.report(args.id) if job["status"] == "succeeded" else None
    except ClientError as exc:
        print(f"regtune: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        print(summary(job, report))
        print(progress_line(job))
    return 0


def add_service_commands(sub: Any) -> None:
    """Add ``serve``, ``worker``, ``submit`` and ``status`` to the ``regtune`` parser's subcommands."""
    serve = sub.add_parser("serve", help="the HTTP API, the dashboard and a runner, in one command")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other "
                       "needs REGTUNE_API_TOKEN)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--no-runner", action="store_true", help="serve only; run `regtune worker`s apart")
    serve.add_argument("--access-log", action="store_true", help="log every request (off: pollers would flood it)")
    serve.set_defaults(func=_needs_service(_cmd_serve))

    worker = sub.add_parser("worker", help="a runner: claims queued jobs from $REGTUNE_DATABASE_URL and runs them")
    worker.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N")
    worker.set_defaults(func=_needs_service(_cmd_worker))

    server_help = "the service's URL (default: $REGTUNE_SERVER or http://127.0.0.1:8000)"
    auth = ("authentication: when $REGTUNE_API_TOKEN is set, it is sent as the bearer token "
            "(Authorization: Bearer ...); a service started with a token answers 401 without it.")
    submit = sub.add_parser("submit", help="send a job spec to the service", epilog=auth)
    submit.add_argument("spec", help="a job spec, YAML or JSON")
    submit.add_argument("--server", help=server_help)
    submit.add_argument("--wait", action="store_true", help="follow the job's progress until it ends")
    submit.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --wait")
    submit.add_argument("--data", help="a data file (.csv, .parquet, .npz) to upload first; the spec's dataset becomes "
                        "{source: upload, id: <its id>}, keeping target, task, split, standardize and max_levels")
    submit.add_argument("--idempotency-key", help="send again with the same key to get the same job back")
    submit.set_defaults(func=_needs_service(_cmd_submit))

    status = sub.add_parser("status", help="where a job stands", epilog=auth)
    status.add_argument("id", help="the job id")
    status.add_argument("--server", help=server_help)
    status.add_argument("--json", action="store_true", help="the whole job as JSON")
    status.set_defaults(func=_needs_service(_cmd_status))
