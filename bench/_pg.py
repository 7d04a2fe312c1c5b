"""The tests' throwaway PostgreSQL cluster (``tests/_postgres.py``), for the benchmarks.

Loaded from its file rather than by putting ``tests/`` on ``sys.path``: that folder's
``tuner/`` and ``api/`` (the tests mirror the packages) would shadow the real packages.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_FILE = Path(__file__).resolve().parent.parent / "tests" / "_postgres.py"
_spec = importlib.util.spec_from_file_location("_regtune_tests_postgres", _FILE)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _module  # dataclasses look their module up by name
_spec.loader.exec_module(_module)

find_bindir = _module.find_bindir
running_server = _module.running_server

__all__ = ["find_bindir", "running_server"]
