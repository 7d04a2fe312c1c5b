"""Plug-in models through the service: the factories on offer, refusal at submit, the tuned model per job."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from _service import make_spec
from fastapi.testclient import TestClient

from api.worker import Runner
from tuner import load_model, parse_spec
from tuner.train import evaluate, load_dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


@pytest.fixture(autouse=True)
def models_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REGTUNE_MODELS_DIR", str(EXAMPLES))
    return EXAMPLES


def plugin_spec(factory: str = "digits_models:mlp_bn") -> dict[str, Any]:
    spec = make_spec("plugin", epochs=2)
    spec["model"] = {"kind": "module", "factory": factory, "args": {"hidden": 8}}
    spec["search"]["space"]["dropout"] = {"low": 0.0, "high": 0.5, "per_layer": True}
    spec["search"]["stages"][1] = {"name": "dropout", "params": ["dropout"], "trials": 1}
    return spec


def test_models_lists_the_factories_with_their_docstrings(client: TestClient) -> None:
    listed = {f["name"]: f for f in client.get("/models").json()}
    assert listed["digits_models:resnet"]["doc"].startswith("Small residual CNN with batch norm")
    assert listed["digits_models:mlp_bn"] == {"name": "digits_models:mlp_bn", "source": "file",
                                             "doc": "Two hidden layers with batch norm, each followed by dropout.",
                                             "error": None}


@pytest.mark.parametrize("factory", ["os:system", "api.main:create_app", "../models/digits_models:resnet"])
def test_a_factory_not_on_offer_is_refused_at_submit(client: TestClient, factory: str) -> None:
    r = client.post("/jobs", json=plugin_spec(factory))
    assert r.status_code == 422, r.text
    [issue] = r.json()["error"]["issues"]
    assert issue["field"] == "model.factory" and "digits_models:resnet" in issue["message"]
    assert client.get("/jobs").json()["total"] == 0


def test_the_service_keeps_the_tuned_model_of_a_job(client: TestClient, runner: Runner, tmp_path: Path) -> None:
    spec = plugin_spec()
    r = client.post("/jobs", json=spec)
    assert r.status_code == 202, r.text
    job = r.json()
    missing = client.get(f"/jobs/{job['id']}/model")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert runner.run_once()
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "succeeded", client.get(f"/jobs/{job['id']}").text
    r = client.get(f"/jobs/{job['id']}/model")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    report = client.get(f"/jobs/{job['id']}/report").json()
    assert report["dropout_layers"] == {"dropout_0": "4", "dropout_1": "8"}
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert sorted(zf.namelist()) == ["model.json", "model.safetensors"]
        zf.extractall(tmp_path / "model")
    model = load_model(tmp_path / "model")
    parsed = parse_spec(spec)
    data = load_dataset(parsed.dataset, parsed.seed)
    assert data.test is not None
    test_loss, _ = evaluate(model, data.test, data.task)
    assert abs(test_loss - report["chosen"]["test_loss"]) <= 1e-5
