"""docker-compose.yml is written for users (no Docker engine here): it parses and runs the right commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[1]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_names_every_part_of_the_scale_out_layout() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "api", "runner", "ray-head"}  # the dashboard is the API's /dashboard
    assert services["api"]["command"][:2] == ["regtune", "serve"] and "--no-runner" in services["api"]["command"]
    assert services["runner"]["command"] == ["regtune", "worker"]
    assert services["ray-head"]["command"][:3] == ["ray", "start", "--head"]
    runner_env, head_env = services["runner"]["environment"], services["ray-head"]["environment"]
    assert runner_env["RAY_ADDRESS"] == "ray-head:6379"
    assert runner_env["RAY_AUTH_TOKEN"] == head_env["RAY_AUTH_TOKEN"]  # Ray 2.60 refuses clients without it
    assert services["postgres"]["image"].startswith("postgres:15")


def test_every_regtune_process_shares_one_database() -> None:
    services = _compose()["services"]
    urls = {services[s]["environment"]["REGTUNE_DATABASE_URL"] for s in ("api", "runner")}
    assert len(urls) == 1 and next(iter(urls)).startswith("postgresql+psycopg://regtune:")
    assert "REGTUNE_API_TOKEN" in services["api"]["environment"]  # bound to 0.0.0.0: a token is required


def test_no_unauthenticated_port_and_no_password_in_the_file() -> None:
    """Only the API (behind its token) listens beyond this machine; secrets come from the environment."""
    services = _compose()["services"]
    assert not any("optuna-dashboard" in str(s.get("command")) for s in services.values())
    public = {name: port for name, s in services.items() for port in s.get("ports", [])
              if not str(port).startswith("127.0.0.1:")}
    assert public == {"api": "8000:8000"}, public
    required = re.compile(r"^\$\{(POSTGRES_PASSWORD|REGTUNE_API_TOKEN|RAY_AUTH_TOKEN):\?[^}]+\}$")
    assert required.match(services["postgres"]["environment"]["POSTGRES_PASSWORD"])
    url = services["api"]["environment"]["REGTUNE_DATABASE_URL"]
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password == services["postgres"]["environment"]["POSTGRES_PASSWORD"]  # the one secret, not a literal
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "TOKEN")):
                assert required.match(str(value)), f"{name}: {key} is a literal, not ${{...:?}} from the environment"


def test_the_image_installs_the_cpu_torch_first() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    torch_line = next(i for i, line in enumerate(lines) if "torch==2.13.0" in line)
    install = "RUN pip install --no-cache-dir '.[service,ray]'"  # the compose file runs the service and Ray
    install_line = next(i for i, line in enumerate(lines) if line.strip() == install)
    assert torch_line < install_line
