"""What a client gets wrong, and what it is told: 4xx in one JSON shape, never a 500; idempotency; auth."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml
from _service import make_spec
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.db import Database
from api.main import create_app
from api.settings import Settings

YAML = {"content-type": "application/yaml"}
# The database plays no part in these answers: SQLite alone. Idempotency and 404/409 run on both.
SQLITE_ONLY = pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)


def error_of(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["issues"], list)
    error: dict[str, Any] = body["error"]
    return error


def fields(error: dict[str, Any]) -> list[str]:
    return [i["field"] for i in error["issues"]]


@SQLITE_ONLY
@pytest.mark.parametrize(("change", "field", "rule"), [
    (lambda s: s["search"]["space"].update(l2={"low": 1.0, "high": 1e-3, "log": True}), "search.space.l2",
     "low <= high"),
    (lambda s: s.update(serch={}), "serch", "unknown field"),
    (lambda s: s["training"].update(epochs=0), "training.epochs", "greater than or equal to 1"),
    (lambda s: s["dataset"].update(name="mnist"), "dataset.name", "valid sklearn datasets are"),
    (lambda s: s["search"]["stages"].append({"name": "x", "params": ["l9"], "trials": 1}), "search.stages", "l9"),
])
def test_invalid_spec_names_the_field_and_rule(client: TestClient, change: Any, field: str, rule: str) -> None:
    spec = make_spec()
    change(spec)
    error = error_of(client.post("/jobs", json=spec), 422, "invalid_spec")
    assert any(f.startswith(field) for f in fields(error)), error
    assert rule in json.dumps(error), error
    assert client.get("/jobs").json()["total"] == 0  # never a half-written job


@SQLITE_ONLY
@pytest.mark.parametrize(("body", "content_type", "says"), [
    (b"name: [unclosed", "application/yaml", "not valid YAML"),
    (b'{"name": ', "application/json", "not valid JSON"),
    (b"", "application/yaml", "empty"),
    (b"\xff\xfe", "application/yaml", "UTF-8"),
    (b"- a list\n", "application/yaml", "mapping"),
    (b"a: &x [1]\nb: *x\n", "application/yaml", "aliases"),
    (b"[" * 5000 + b"]" * 5000, "application/json", "nests too deeply"),
])
def test_bodies_that_are_no_spec(client: TestClient, body: bytes, content_type: str, says: str) -> None:
    error = error_of(client.post("/jobs", content=body, headers={"content-type": content_type}), 422, "invalid_spec")
    assert says in error["issues"][0]["message"]


@pytest.mark.parametrize(("spec", "field", "limit"), [
    (make_spec(epochs=11), "training.epochs", "REGTUNE_MAX_EPOCHS"),
    (make_spec(trials=10), "search.stages", "REGTUNE_MAX_TRIALS"),
    (make_spec(hidden=[40, 40]), "model.hidden", "REGTUNE_MAX_HIDDEN_UNITS"),
])
def test_limits_answer_422_naming_the_limit(sqlite_url: str, spec: dict[str, Any], field: str, limit: str) -> None:
    settings = Settings(database_url=sqlite_url, api_token=None, max_epochs=10, max_trials=10, max_hidden_units=64)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        error = error_of(client.post("/jobs", json=spec), 422, "limit_exceeded")
        assert fields(error) == [field] and limit in error["issues"][0]["message"]
        assert client.post("/jobs", json=make_spec()).status_code == 202


@SQLITE_ONLY
def test_bodies_over_one_mebibyte_answer_413(client: TestClient) -> None:
    huge = b"name: x\n" + b"#" * (1024 * 1024)
    error_of(client.post("/jobs", content=huge, headers=YAML), 413, "body_too_large")

    def chunks() -> Any:  # no Content-Length: counted as it streams in
        for _ in range(20):
            yield b"#" * 65536

    error_of(client.post("/jobs", content=chunks(), headers=YAML), 413, "body_too_large")


def test_unknown_job_is_404(client: TestClient) -> None:
    for job_id in ("does-not-exist-424242", "0123456789ab", "%00", "x" * 300):
        for method, path in (("GET", "/jobs/{}"), ("GET", "/jobs/{}/trials"), ("GET", "/jobs/{}/report"),
                             ("POST", "/jobs/{}/cancel")):
            error = error_of(client.request(method, path.format(job_id)), 404, "job_not_found")
            assert "no job has id" in error["message"]


def test_report_before_success_is_409(client: TestClient) -> None:
    job = client.post("/jobs", json=make_spec()).json()
    error = error_of(client.get(f"/jobs/{job['id']}/report"), 409, "report_not_ready")
    assert "queued" in error["message"]


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    spec = make_spec("again")
    first = client.post("/jobs", json=spec, headers={"Idempotency-Key": "k-1"})
    again = client.post("/jobs", content=yaml.safe_dump(spec), headers={"Idempotency-Key": "k-1", **YAML})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["location"] == first.headers["location"]
    other = client.post("/jobs", json=make_spec("other"), headers={"Idempotency-Key": "k-1"})
    error = error_of(other, 422, "idempotency_key_reused")
    assert fields(error) == ["header.Idempotency-Key"] and first.json()["id"] in error["message"]
    error_of(client.post("/jobs", json=spec, headers={"Idempotency-Key": "has space"}), 422, "invalid_request")
    assert client.get("/jobs").json()["total"] == 1


def test_concurrent_duplicates_make_one_job(client: TestClient) -> None:
    spec = make_spec("race")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/jobs", json=spec, headers={"Idempotency-Key": "same"}),
                                range(16)))
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["id"] for r in answers}) == 1
    assert client.get("/jobs").json()["total"] == 1


@SQLITE_ONLY
def test_health(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}


def test_every_route_needs_the_token_when_one_is_set(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, api_token=SecretStr("s3cret-token-0123"))
    with TestClient(create_app(settings)) as client:
        for path in ("/healthz", "/jobs", "/dashboard", "/api/studies", "/openapi.json", "/jobs/0123456789ab",
                     "/models", "/jobs/0123456789ab/model", "/datasets", "/datasets/" + "0" * 64):
            bare = error_of(client.get(path), 401, "unauthorized")
            assert "no Authorization header" in bare["message"]
            assert client.get(path).headers["www-authenticate"].startswith("Bearer")
            error_of(client.get(path, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
            error_of(client.get(path, headers={"Authorization": "s3cret-token-0123"}), 401, "unauthorized")
        ok = {"Authorization": "Bearer s3cret-token-0123"}
        assert client.get("/healthz", headers=ok).status_code == 200
        assert client.get("/dashboard", headers=ok).status_code == 200
        assert client.post("/jobs", json=make_spec(), headers=ok).status_code == 202
        error_of(client.post("/jobs", json=make_spec()), 401, "unauthorized")
        error_of(client.post("/datasets", content=b"a\n1\n", headers={"content-type": "text/csv"}), 401,
                 "unauthorized")
        error_of(client.delete("/datasets/" + "0" * 64), 401, "unauthorized")
        assert client.get("/jobs", headers=ok).json()["total"] == 1


@SQLITE_ONLY
def test_an_unreachable_database_answers_503(client: TestClient) -> None:
    client.app.state.db = Database.open("postgresql+psycopg://nobody:nothing@127.0.0.1:1/none")  # type: ignore[attr-defined]
    for path in ("/healthz", "/jobs", "/jobs/0123456789ab"):
        r = client.get(path)
        assert r.status_code == 503, (path, r.text)
        assert r.json()["error"]["code"] in ("database_unreachable", "database_unavailable")


@SQLITE_ONLY
def test_state_messages_and_filters_read_as_a_person_writes(client: TestClient) -> None:
    job = client.post("/jobs", json=make_spec("words")).json()
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 202
    again = error_of(client.post(f"/jobs/{job['id']}/cancel"), 409, "job_finished")
    assert again["message"] == (f"job {job['id']} was already cancelled; only a queued or running job can be "
                                "cancelled")
    report = error_of(client.get(f"/jobs/{job['id']}/report"), 409, "report_not_ready")
    assert report["message"] == f"job {job['id']} was cancelled before its report was written"
    # a status or a trial state in either case
    for status in ("cancelled", "CANCELLED", "Cancelled"):
        listed = client.get("/jobs", params={"status": status})
        assert listed.status_code == 200 and [j["id"] for j in listed.json()["items"]] == [job["id"]]
    for state in ("complete", "COMPLETE"):
        assert client.get(f"/jobs/{job['id']}/trials", params={"state": state}).json()["count"] == 0
    error_of(client.get("/jobs", params={"status": "done"}), 422, "invalid_request")


@pytest.mark.parametrize(("body", "content_type", "field"), [
    (b'{"name": "a", "name": "b"}', "application/json", "name"),
    (b"name: a\ntraining:\n  lr: 0.1\n  lr: 0.2\n", "application/yaml", "training.lr"),
])
def test_duplicate_keys_answer_422_naming_the_key(client: TestClient, body: bytes, content_type: str,
                                                  field: str) -> None:
    error = error_of(client.post("/jobs", content=body, headers={"content-type": content_type}), 422, "invalid_spec")
    assert fields(error) == [field] and "appears more than once" in error["issues"][0]["message"]
    assert client.get("/jobs").json()["total"] == 0


def _with_training(**training: Any) -> dict[str, Any]:
    spec = make_spec()
    spec["training"].update(training)
    return spec


@SQLITE_ONLY
@pytest.mark.parametrize(("body", "content_type", "field"), [
    (json.dumps(_with_training(lr=float("inf"))).encode(), "application/json", "training.lr"),
    (yaml.safe_dump(_with_training(lr=float("nan"))).encode(), "application/yaml", "training.lr"),
    (yaml.safe_dump(_with_training(epochs=True)).encode(), "application/yaml", "training.epochs"),
])
def test_non_finite_numbers_and_loose_types_answer_422(client: TestClient, body: bytes, content_type: str,
                                                       field: str) -> None:
    error = error_of(client.post("/jobs", content=body, headers={"content-type": content_type}), 422, "invalid_spec")
    assert fields(error) == [field], error
    assert client.get("/jobs").json()["total"] == 0


def _grid(spec: dict[str, Any]) -> None:
    spec["search"].update(sampler="grid")
    spec["search"]["space"]["l2"].update(grid=20)


@pytest.mark.parametrize(("change", "field", "limit"), [
    (_grid, "search.stages", "REGTUNE_MAX_GRID_POINTS"),
    (lambda s: s["search"].update(backend="ray"), "search.backend", "REGTUNE_ALLOW_RAY"),
    (lambda s: s["search"].update(parallelism=3), "search.parallelism", "REGTUNE_MAX_PARALLELISM"),
    (lambda s: s["report"].update(top_k=20, seeds=20), "training", "REGTUNE_MAX_WORK"),
    (lambda s: s.update(dataset={"source": "synthetic", "n_samples": 100_000, "n_features": 100}),
     "dataset.n_samples", "REGTUNE_MAX_DATA_CELLS"),
])
def test_job_wide_limits_answer_422_naming_the_field_and_setting(sqlite_url: str, change: Any, field: str,
                                                                 limit: str) -> None:
    settings = Settings(database_url=sqlite_url, api_token=None, max_grid_points=10, max_parallelism=2,
                        max_work=10_000, max_data_cells=1_000_000)
    spec = make_spec()
    change(spec)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        error = error_of(client.post("/jobs", json=spec), 422, "limit_exceeded")
        assert fields(error) == [field] and limit in error["issues"][0]["message"], error
        assert client.post("/jobs", json=make_spec()).status_code == 202
