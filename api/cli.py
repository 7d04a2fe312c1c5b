"""The ``regtune`` command: ``run`` (in-process), and the service's ``serve``, ``worker``, ``submit``, ``status``.

``regtune run`` touches only the tuning library; the service's modules are imported
only by the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from api.progress_bars import BarProgress
    from tuner import DEFAULT_URL, RegtuneError, load_spec, run_job

    try:
        spec = load_spec(Path(args.spec))
        storage = args.storage or os.environ.get("REGTUNE_DATABASE_URL") or DEFAULT_URL
        out = Path(args.out) if args.out else Path("runs") / spec.name
        progress = BarProgress(quiet=args.quiet)
        report = run_job(spec, storage=storage, out_dir=out, progress=progress)
    except RegtuneError as exc:
        print(f"regtune: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("regtune: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    progress.summary(report, out)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regtune", description="Staged search for regularization hyperparameters.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job spec in-process and write its report")
    run.add_argument("spec", help="a job spec, YAML or JSON")
    run.add_argument("--storage", help="database URL for the studies (default: $REGTUNE_DATABASE_URL or "
                     "sqlite:///regtune.db)")
    run.add_argument("--out", help="folder for report.json and report.md (default: runs/<name>)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)
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
