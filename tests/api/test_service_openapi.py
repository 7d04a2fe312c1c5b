"""Schemathesis against the service's own ``/openapi.json``: no 500, and every answer as documented.

Each operation gets a bounded number of generated requests, valid ones and
invalid ones. (The schema cannot carry the spec's cross-field rules, so a
schema-valid spec may still, rightly, answer 422.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from api.main import create_app
from api.runners_table import see_runner
from api.settings import Settings

EXAMPLES = 25
# Schemathesis calls the app as host "testserver": a token lets the service answer any host.
TOKEN = "openapi-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@schemathesis.serializer("application/yaml")
def _yaml(ctx: Any, value: Any) -> bytes:
    return yaml.safe_dump(value).encode()


@pytest.fixture
def api_schema(tmp_path: Path) -> Iterator[Any]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/openapi.db", api_token=SecretStr(TOKEN)))
    with TestClient(app, headers=AUTH) as client:
        client.post("/jobs", json={"name": "seeded", "dataset": {"source": "sklearn", "name": "iris"},
                                   "search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}}}})
        with app.state.db.session() as session:  # a runner is about, as in a working service: /readyz is 200
            see_runner(session=session, runner="openapi-test")
        yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_500_and_every_answer_matches_the_schema(api_schema: Any, mode: GenerationMode) -> None:
    labels = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
            assert mode == GenerationMode.NEGATIVE, operation.label
    assert {"POST /jobs", "GET /jobs/{job_id}", "GET /jobs/{job_id}/trials", "GET /healthz"} <= set(labels)


@pytest.fixture
def docs(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/docs.db", api_token=None))
    with TestClient(app, base_url="http://127.0.0.1") as client:  # no token: loopback names only
        yield client


def _models(components: dict[str, Any], root: str) -> set[str]:
    """``root`` and every component schema it reaches through ``$ref``."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [ref.rsplit("/", 1)[1] for ref in _refs(components[name])]
    return seen


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _undescribed(components: dict[str, Any], models: set[str]) -> list[str]:
    return [f"{m}.{k}" for m in sorted(models) for k, p in components[m].get("properties", {}).items()
            if not p.get("description")]


def test_the_report_route_documents_every_report_field(docs: TestClient) -> None:
    schema = docs.get("/openapi.json").json()
    answer = schema["paths"]["/jobs/{job_id}/report"]["get"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/Report"}
    components = schema["components"]["schemas"]
    models = _models(components, "Report")
    assert {"RunSummary", "ChosenRun", "SeedSummary", "CandidateSummary", "StageSummary", "ParetoPoint",
            "Curves", "LearningCurve", "FeatureSummary"} <= models
    assert {"diagnosis", "baseline", "chosen", "candidates", "stages", "pareto", "importances",
            "features"} <= set(components["Report"]["properties"])
    assert {"test_acc", "test_rmse"} <= set(components["RunSummary"]["properties"])
    assert not _undescribed(components, models), "report fields without a description"


def test_every_spec_field_is_described_and_docs_are_served(docs: TestClient) -> None:
    components = docs.get("/openapi.json").json()["components"]["schemas"]
    models = _models(components, "JobSpec")
    assert {"DatasetSpec", "Split", "ModelSpec", "TrainingSpec", "EarlyStopping", "SearchSpec", "Space",
            "KnobRange", "StageSpec", "ReportSpec"} <= models
    assert not _undescribed(components, models), "spec fields without a description"
    grid = components["KnobRange"]["properties"]["grid"]["description"]
    assert "grid sampler" in grid
    assert "baseline" in components["SearchSpec"]["properties"]["stages"]["description"]
    page = docs.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in page.text and "/openapi.json" in page.text
