"""`regtune` where only the library is installed: `run` works; the service's commands name the extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _service import make_spec

# Run in a fresh interpreter where the `service` and `ray` extras' modules cannot be imported
LIBRARY_ONLY = """
import sys
from api.service_commands import SERVICE_MODULES
for name in SERVICE_MODULES | {"ray", "psycopg"}:
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError, as where it is not installed
from api.cli import main
code = main(sys.argv[1:])
loaded = sorted(n for n, m in sys.modules.items() if m is not None and n.split(".")[0] in SERVICE_MODULES | {"ray"})
print("loaded:", loaded)
raise SystemExit(code)
"""


def _regtune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LIBRARY_ONLY, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240)


def test_run_needs_only_the_library(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(make_spec("library-only")))
    done = _regtune("run", "spec.yaml", "--storage", f"sqlite:///{tmp_path / 'runs.db'}", "--out", "out", "--quiet",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout
    assert {"report.json", "report.md", "report.html"} <= {p.name for p in (tmp_path / "out").iterdir()}


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["status", "some-id"]])
def test_service_commands_name_the_extra_to_install(tmp_path: Path, command: list[str]) -> None:
    done = _regtune(*command, cwd=tmp_path)
    assert done.returncode == 2
    assert f"regtune {command[0]}: the service's libraries are not installed" in done.stderr
    assert "pip install 'regtune[service]'" in done.stderr
