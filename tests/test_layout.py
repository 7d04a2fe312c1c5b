"""The layout the code promises: no import cycle, light imports, public faces between packages.

Read from the source files (``ast``), not by importing them, except where the
promise is about what an import loads: that runs in a fresh interpreter. The
import graph holds every import that runs (in a function too); imports under
``if TYPE_CHECKING:`` are left out, as siblings may name each other's types there.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tuner", "api")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    """Every module of ``tuner`` and ``api`` by dotted name."""
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


SOURCES = _sources()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run: at module level or in a function (a lazy import is a dependency too),
    not those under ``if TYPE_CHECKING:``, which only the type checker follows."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _runtime_imports(node.orelse)
        else:
            for _, value in ast.iter_fields(node):
                if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                    yield from _runtime_imports(value)
                elif isinstance(value, list) and value and isinstance(value[0], ast.excepthandler):
                    for handler in value:
                        yield from _runtime_imports(handler.body)


def _anywhere(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import in the module, in functions and under TYPE_CHECKING too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module a ``from`` import names, relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    is_package = SOURCES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str | None]]:
    """``(module imported, name taken from it or None)`` for each name of an import statement."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, None
        return
    source = _absolute(module, node)
    for alias in node.names:
        yield source, alias.name


def _edges(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The modules of ours an import statement loads (``from pkg import mod`` loads ``pkg.mod``)."""
    for source, name in _targets(module, node):
        if name is not None and f"{source}.{name}" in SOURCES:
            yield f"{source}.{name}"
        elif source in SOURCES:
            yield source


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in SOURCES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = {t for node in _runtime_imports(tree.body) for t in _edges(module, node)} - {module}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, …, a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _public_names(module: str) -> set[str]:
    """The ``__all__`` of one of tuner's modules, read from its source."""
    tree = ast.parse(SOURCES[module].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def _package_of(module: str) -> str:
    """The package a module belongs to: itself for a package's ``__init__``, else its parent."""
    return module if SOURCES[module].name == "__init__.py" else module.rpartition(".")[0]


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "tuner.spec._rules" in graph["tuner.spec._parse"]
    assert "tuner.spec" in graph["tuner.train._data"]
    assert "tuner.backends.ray" not in graph["tuner.backends"]  # loaded by name, when a job asks for Ray


def test_no_import_cycle() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_an_import_in_a_function_counts_and_one_for_the_type_checker_does_not() -> None:
    """The old spec cycle ran through imports inside functions, with another under TYPE_CHECKING."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from a import A\n"
        "def f():\n    from b import B\n"
        "try:\n    import c\nexcept ImportError:\n    import d\n"
    )
    assert [ast.unparse(n) for n in _runtime_imports(tree.body)] == [
        "from typing import TYPE_CHECKING", "from b import B", "import c", "import d"]


def test_tuner_never_imports_api() -> None:
    found = [
        f"{module}:{node.lineno}"
        for module, path in SOURCES.items() if module.split(".")[0] == "tuner"
        for node in _anywhere(ast.parse(path.read_text(encoding="utf-8")))
        for source, _ in _targets(module, node) if source.split(".")[0] == "api"
    ]
    assert not found, f"tuner is a library that stands alone, but these import api: {found}"


def test_no_private_name_crosses_a_package() -> None:
    """A private module (``_x``) or name is imported only from inside the package that holds it."""
    found = []
    for module, path in SOURCES.items():
        if not module.startswith("tuner"):
            continue
        package = _package_of(module)
        for node in _anywhere(ast.parse(path.read_text(encoding="utf-8"))):
            for source, name in _targets(module, node):
                if source.split(".")[0] != "tuner":
                    continue
                parts = source.split(".")
                private = [i for i, p in enumerate(parts) if p.startswith("_")]
                owner = ".".join(parts[: private[0]]) if private else None
                if name is not None and name.startswith("_") and source in SOURCES:
                    owner = owner or _package_of(source)
                if owner is not None and package != owner and not package.startswith(owner + "."):
                    found.append(f"{module}:{node.lineno} imports {source}{'.' + name if name else ''}")
    assert not found, "private modules and names stay inside their package:\n" + "\n".join(found)


def test_api_uses_only_tuners_public_faces() -> None:
    """Every ``from tuner… import X`` in api/ names a public module of tuner and an X in its ``__all__``."""
    found = []
    for module, path in SOURCES.items():
        if not module.startswith("api"):
            continue
        for node in _anywhere(ast.parse(path.read_text(encoding="utf-8"))):
            for source, name in _targets(module, node):
                if source.split(".")[0] != "tuner":
                    continue
                where = f"{module}:{node.lineno}"
                if any(p.startswith("_") for p in source.split(".")) or source not in SOURCES:
                    found.append(f"{where} imports from {source}, which is not a public module of tuner")
                elif name is None:
                    found.append(f"{where} imports {source} whole; name what it uses: from {source} import …")
                elif name not in _public_names(source):
                    found.append(f"{where} imports {name} from {source}, which is not in its __all__")
    assert not found, "\n".join(found)


def test_every_face_exports_what_it_lists() -> None:
    """Each ``__all__`` of tuner names something its module defines or imports."""
    missing = []
    for module, path in SOURCES.items():
        if not module.startswith("tuner"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                bound.add(node.name)
            elif isinstance(node, ast.Assign):
                bound |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                bound.add(node.target.id)
            elif isinstance(node, ast.ImportFrom):
                bound |= {a.asname or a.name for a in node.names}
        missing += [f"{module}.{name}" for name in _public_names(module) - bound]
    assert not missing, f"listed in __all__ but not defined: {missing}"


LIGHT = ("tuner", "tuner.spec", "tuner.train", "tuner.search", "tuner.backends", "tuner.report")
HEAVY = ("fastapi", "ray", "matplotlib")

PROBE = f"""
import importlib, json, sys
loaded = {{}}
for name in {LIGHT!r}:
    importlib.import_module(name)
    if name == "tuner":
        from tuner import run_job  # noqa: F401
    loaded[name] = sorted(m for m in {HEAVY!r} if m in sys.modules)
import tuner.backends.ray, tuner.plots
loaded["tuner.backends.ray, tuner.plots"] = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """The heavy libraries in ``sys.modules`` after each import, in a fresh interpreter."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", LIGHT)
def test_importing_the_library_loads_no_service_ray_or_matplotlib(name: str, loaded: dict[str, list[str]]) -> None:
    assert loaded[name] == [], f"import {name} loaded {loaded[name]}"


def test_the_probe_sees_a_heavy_import(loaded: dict[str, list[str]]) -> None:
    assert loaded["tuner.backends.ray, tuner.plots"] == ["matplotlib", "ray"]
