"""Model factories the operator installed; never code a request names.

A factory is a callable ``factory(input_shape, n_outputs, **args) -> torch.nn.Module``.
There are two places it can come from, both put there by whoever runs regtune:

1. a Python file in ``REGTUNE_MODELS_DIR``: ``"mymodels:build"`` is the function
   ``build`` defined in ``mymodels.py`` there;
2. an installed package's entry point in the group ``regtune.models``: ``"resnet-small"``.

A name is checked against those two places before anything is imported: a
dotted module path, an absolute path, ``/`` or ``..``, or a file that is not in
the folder is refused and never imported. Torch is not imported here.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from tuner.errors import SpecError

__all__ = ["ENTRY_POINT_GROUP", "FactoryInfo", "list_factories", "load_factory", "models_dir"]

ENTRY_POINT_GROUP = "regtune.models"
_FILE_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):([A-Za-z_][A-Za-z0-9_]*)$")
_ENTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_lock = threading.Lock()
_loaded: dict[Path, tuple[float, ModuleType]] = {}


@dataclass(frozen=True)
class FactoryInfo:
    """One factory: the name a spec uses, where it comes from, the first line of its docstring."""

    name: str
    source: str  # "file" or "entry_point"
    doc: str
    error: str | None = None  # the file or entry point could not be loaded


def models_dir() -> Path | None:
    """``REGTUNE_MODELS_DIR``, resolved; None when it is not set."""
    raw = os.environ.get("REGTUNE_MODELS_DIR")
    return Path(raw).resolve() if raw else None


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _file_of(stem: str) -> Path | None:
    """``<stem>.py`` in the models folder, if it is there and really inside it (no symlink out)."""
    root = models_dir()
    if root is None:
        return None
    path = (root / f"{stem}.py").resolve()
    return path if path.is_file() and path.is_relative_to(root) else None


def _import_file(path: Path) -> ModuleType:
    """Import a file of the models folder under a private name (reloaded when the file changes)."""
    mtime = path.stat().st_mtime
    with _lock:
        hit = _loaded.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        name = f"regtune_models_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path.name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        _loaded[path] = (mtime, module)
        return module


def _file_factories(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """The public functions a models file defines (or lists in ``__all__``)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and inspect.isfunction(obj) and obj.__module__ == module.__name__]
    return {n: getattr(module, n) for n in names if callable(getattr(module, n, None))}


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_factories() -> list[FactoryInfo]:
    """Every factory on offer: the models folder's files (imported), then the entry points (loaded)."""
    out: list[FactoryInfo] = []
    root = models_dir()
    if root is not None and root.is_dir():
        for path in sorted(root.glob("*.py")):
            if not _FILE_NAME.match(f"{path.stem}:x") or _file_of(path.stem) is None:
                continue
            try:
                found = _file_factories(_import_file(path))
            except Exception as exc:  # an operator's broken file is listed, not fatal
                out.append(FactoryInfo(f"{path.stem}:*", "file", "", f"{type(exc).__name__}: {exc}"))
                continue
            out += [FactoryInfo(f"{path.stem}:{n}", "file", _first_line(f)) for n, f in found.items()]
    for name, ep in sorted(_entry_points().items()):
        try:
            out.append(FactoryInfo(name, "entry_point", _first_line(ep.load())))
        except Exception as exc:
            out.append(FactoryInfo(name, "entry_point", "", f"{type(exc).__name__}: {exc}"))
    return out


def _names_on_offer() -> str:
    names = [f.name for f in list_factories() if f.error is None]
    if names:
        return "factories on offer: " + ", ".join(names)
    where = f"REGTUNE_MODELS_DIR ({models_dir()})" if models_dir() else "REGTUNE_MODELS_DIR (not set)"
    return f"no factories are on offer: put a models file in {where} or install a package with " \
           f"'{ENTRY_POINT_GROUP}' entry points"


def load_factory(name: str) -> Callable[..., Any]:
    """The factory a spec names, from the models folder or an entry point; nothing else is imported.

    Raises:
        SpecError: on ``model.factory``, naming the rule and listing the factories on offer.
    """
    match = _FILE_NAME.match(name)
    if match is not None:
        stem, func = match.groups()
        path = _file_of(stem)
        if path is None:
            raise SpecError.one("model.factory", f"{name!r} names {stem}.py, which is not a file in "
                                f"REGTUNE_MODELS_DIR; {_names_on_offer()}", name)
        try:
            module = _import_file(path)
        except Exception as exc:
            raise SpecError.one("model.factory", f"{stem}.py in REGTUNE_MODELS_DIR fails to import: "
                                f"{type(exc).__name__}: {exc}", name) from None
        factories = _file_factories(module)
        if func not in factories:
            raise SpecError.one("model.factory", f"{stem}.py defines no factory {func!r}; "
                                f"{_names_on_offer()}", name)
        return factories[func]
    eps = _entry_points()
    if ":" not in name and _ENTRY_NAME.match(name) and ".." not in name and name in eps:
        try:
            loaded: Callable[..., Any] = eps[name].load()
        except Exception as exc:
            raise SpecError.one("model.factory", f"the entry point {name!r} fails to load: "
                                f"{type(exc).__name__}: {exc}", name) from None
        return loaded
    raise SpecError.one("model.factory", f"must be '<file>:<function>' for a file in REGTUNE_MODELS_DIR or the "
                        f"name of a '{ENTRY_POINT_GROUP}' entry point, but got {name!r}; {_names_on_offer()}", name)

