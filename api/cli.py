"""The ``regtune`` command: ``run`` (in-process), and the service's ``serve``, ``worker``, ``submit``, ``status``.

``regtune run`` touches only the tuning library; the service's modules are imported
only by the commands that need them.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


EXIT_FAILED = 1
"""The spec was valid, but the run failed (a stage could not complete its budget, a storage error)."""
EXIT_INVALID = 2
"""The spec, the data it names or the command line broke a rule; nothing ran (or resuming was refused)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT): the running trials were recorded FAIL (interrupted); the same command resumes."""

RUN_EPILOG = f"""exit status: 0 the run finished and its report is written; {EXIT_FAILED} the run failed (the message
says which stage and why); {EXIT_INVALID} invalid spec, data or storage URL, or a resume of a different spec
(nothing was trained); {EXIT_INTERRUPTED} interrupted (Ctrl-C): run the same command again to resume.

Resuming: the same spec, name and storage pick up where the last run stopped. A study run with another
spec (dataset, model, training, seed, a stage's priors, objectives) is not resumed: give the job a new
name, or pass --fresh to delete its studies first."""


def _cmd_run(args: argparse.Namespace) -> int:
    from api.progress_bars import BarProgress
    from tuner import DEFAULT_URL, RegtuneError, SpecError, load_spec, run_job, storage_url

    try:
        spec = load_spec(Path(args.spec))
        storage = storage_url(args.storage or os.environ.get("REGTUNE_DATABASE_URL") or DEFAULT_URL)
        out = Path(args.out) if args.out else Path("runs") / spec.name
        progress = BarProgress(quiet=args.quiet)
        gc.collect()  # the libraries imported so far (torch, optuna, ...) are kept out of the run's full
        gc.freeze()  # collections: in a bench-sized run, 1.0 -> 0.75 s of them
        try:
            report = run_job(spec, storage=storage, out_dir=out, progress=progress, fresh=args.fresh)
        finally:
            gc.unfreeze()  # collectable again where ``main`` is called in a longer process (tests)
    except SpecError as exc:
        print(f"regtune: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except RegtuneError as exc:
        print(f"regtune: the run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("regtune: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    progress.summary(report, out)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from tuner.plugins import list_factories, models_dir

    factories = list_factories()
    if not factories:
        where = models_dir() or "REGTUNE_MODELS_DIR (not set)"
        print(f"no model factories: put a Python file in {where} or install 'regtune.models' entry points")
    width = max((len(f.name) for f in factories), default=0)
    for f in factories:
        print(f"{f.name:<{width}}  {f.doc if f.error is None else 'cannot be loaded: ' + f.error}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regtune", description="Staged search for regularization hyperparameters.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job spec in-process and write its report", epilog=RUN_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("spec", help="a job spec, YAML or JSON")
    run.add_argument("--storage", help="database URL for the studies, e.g. sqlite:///runs.db or "
                     "postgresql+psycopg://user@host/db; a plain file path is a SQLite file "
                     "(default: $REGTUNE_DATABASE_URL or sqlite:///regtune.db)")
    run.add_argument("--out", help="folder for the report: report.json, report.md, report.html and "
                     "plots/<name>.png, and the tuned model: model.safetensors, model.json (default: runs/<name>)")
    run.add_argument("--fresh", action="store_true", help="delete this job's studies (<name>/<stage>) in the "
                     "storage first and start over, instead of resuming them")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)
    models = sub.add_parser("models", help="list the model factories a spec may name (kind: module)")
    models.set_defaults(func=_cmd_models)
    try:
        from api.service_commands import add_service_commands
    except ImportError:  # the service commands are optional in a library-only checkout
        pass
    else:
        add_service_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
