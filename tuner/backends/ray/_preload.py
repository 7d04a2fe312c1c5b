"""What the workers of a local cluster import as they start (``ensure_ray``'s ``preload_python_modules``).

The trainable, and with it torch, Optuna and regtune's training; then what a worker's first trial
would import as it opens the storage: Optuna's table models and alembic, which ``RDBStorage`` loads
even when it checks no schema (0.29 s of a fresh worker's first trial, measured). Only imports: a module
that is missing (another Optuna) is passed over, and the worker starts as it would have.

Then the objects those imports made (a few hundred thousand) are collected once and frozen (``gc.freeze``):
a worker's first full garbage collection walked them all during its first trial (0.16 s, measured), and
every later one would walk them again; frozen, the collector leaves them out. Nothing but the worker's
start-up made them, and they live as long as its modules.
"""

from __future__ import annotations

import contextlib
import gc
import importlib

from tuner.backends.ray import _trainable  # noqa: F401  (imported for its imports)

STORAGE_MODULES = ("optuna.storages._rdb.models", "alembic.command", "alembic.config", "alembic.migration",
                   "alembic.script")
"""What ``optuna.storages.RDBStorage`` imports as it opens, lazily (Optuna 5)."""

for _name in STORAGE_MODULES:
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)

gc.collect()
gc.freeze()
