"""Uploaded tables with text categories and missing values: ``regtune submit --data`` tunes them as ``regtune run``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from _service import make_spec
from _tables import houses, write_csv, write_parquet
from fastapi.testclient import TestClient
from test_service_errors import error_of

from api.cli import main as regtune
from api.settings import Settings
from api.worker import Runner

pytestmark = pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(storage_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's settings with its data dir in ``tmp_path/data`` (the in-process runner reads it from env)."""
    data = tmp_path / "data"
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(data))
    return Settings(database_url=storage_url, api_token=None, data_dir=data, lease_seconds=5, heartbeat_seconds=1,
                    poll_seconds=0.2)


def table_spec(name: str, **dataset: Any) -> dict[str, Any]:
    """A linear model on the houses table: the baseline, then an L1 path of three points."""
    spec = make_spec(name, epochs=3)
    spec["dataset"] = {"source": "csv", "path": "houses.csv", "target": "label", "max_levels": 4, **dataset}
    spec["search"]["space"] = {"l1": {"low": 1e-4, "high": 1e-1, "log": True, "allow_zero": True}}
    spec["search"]["stages"] = [{"name": "baseline", "params": [], "trials": 1},
                                {"name": "l1", "params": ["l1"], "trials": 3}]
    return spec


def trials(storage: str, prefix: str) -> list[tuple[str, dict[str, Any], float | None]]:
    """Every trial of the job's stages: its stage, parameters and val loss."""
    return [(stage, t.params, t.value) for stage in ("baseline", "l1")
            for t in optuna.load_study(study_name=f"{prefix}/{stage}", storage=storage).trials]


def test_a_table_with_categories_sent_by_regtune_submit_data_tunes_as_regtune_run_tunes_it(
        client: TestClient, runner: Runner, settings: Settings, tmp_path: Path, storage_url: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data, spec_file = tmp_path / "houses.csv", tmp_path / "spec.yaml"
    write_csv(data, houses())
    spec_file.write_text(yaml.safe_dump(table_spec("houses")), encoding="utf-8")

    # `regtune submit --data`: the CLI's client talks to this app in-process (the same routes, no socket)
    monkeypatch.setattr("api.client.httpx.Client", lambda **_: client)
    assert regtune(["submit", str(spec_file), "--data", str(data), "--server", "http://127.0.0.1"]) == 0
    job_id = capsys.readouterr().out.split()[1]
    [upload] = client.get("/datasets").json()
    assert {c["name"]: (c["dtype"], c["missing"]) for c in upload["columns"]} == {
        "age": ("integer", 11), "city": ("string", 9), "member": ("boolean", 40), "income": ("float", 0),
        "label": ("string", 0)}
    assert runner.run_once()
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    dataset = job["spec"]["dataset"]
    assert (dataset["source"], dataset["id"], dataset["max_levels"]) == ("upload", upload["id"], 4)
    report = client.get(f"/jobs/{job_id}/report").json()
    assert report["classes"] == ["no", "yes"]
    prep = report["preprocessing"]
    assert [(c["name"], c["kind"], c["imputed"], c.get("one_hot")) for c in prep["columns"]] == [
        ("age", "number", 11, None), ("city", "category", 9, 4), ("member", "category", 40, 2),
        ("income", "number", 0, None)]
    assert prep["fitted_on"] == 84 and prep["inputs"] == 8  # the training split: 70% of 120 rows
    assert set(report["features"]["kept"]) | set(report["features"]["removed"]) == {"age", "city", "member", "income"}
    page = client.get(f"/jobs/{job_id}/report.html").text
    assert 'id="preprocessing"' in page and "Classes: no, yes." in page

    (settings.data_dir / "houses.csv").write_bytes(data.read_bytes())  # `regtune run` reads it from the data dir
    local = f"sqlite:///{tmp_path}/run.db"
    assert regtune(["run", str(spec_file), "--storage", local, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    served = trials(storage_url, job["study_prefix"])
    assert len(served) == 4 and served == trials(local, "houses")  # the same params, the same val losses
    assert "| city | category | 9 |" in (tmp_path / "out" / "report.md").read_text()


def test_a_parquet_table_with_categories_and_nulls_tunes_as_the_same_table_in_csv(
        client: TestClient, runner: Runner, storage_url: str, tmp_path: Path) -> None:
    rows = houses()
    write_csv(tmp_path / "houses.csv", rows)
    write_parquet(tmp_path / "houses.parquet", rows)
    summaries, reports, losses = [], [], []
    for name, kind in (("houses.parquet", "application/vnd.apache.parquet"), ("houses.csv", "text/csv")):
        up = client.post("/datasets", content=(tmp_path / name).read_bytes(), headers={"content-type": kind})
        assert up.status_code == 201, up.text
        summaries.append({c["name"]: c["missing"] for c in up.json()["columns"]})
        spec = table_spec(name.replace(".", "-"), source="upload", id=up.json()["id"], path=None)
        del spec["dataset"]["path"]
        job = client.post("/jobs", json=spec).json()
        assert runner.run_once()
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"
        reports.append(client.get(f"/jobs/{job['id']}/report").json())
        losses.append([v for _, _, v in trials(storage_url, job["study_prefix"])])
    assert summaries[0] == summaries[1] == {"age": 11, "city": 9, "member": 40, "income": 0, "label": 0}
    assert reports[0]["preprocessing"] == reports[1]["preprocessing"]
    assert reports[0]["classes"] == ["no", "yes"] and len(losses[0]) == 4 and losses[0] == losses[1]


def test_max_levels_applies_to_an_uploaded_table_not_to_arrays(client: TestClient) -> None:
    buf = io.BytesIO()
    np.savez(buf, X=np.zeros((4, 2)), y=np.arange(4))
    npz_id = client.post("/datasets?format=npz", content=buf.getvalue(),
                         headers={"content-type": "application/octet-stream"}).json()["id"]
    spec = make_spec("arrays")
    spec["dataset"] = {"source": "upload", "id": npz_id, "max_levels": 5}
    error = error_of(client.post("/jobs", json=spec), 422, "invalid_spec")
    assert error["issues"][0]["field"] == "dataset.max_levels" and "npz" in error["issues"][0]["message"]
    spec["dataset"] = {"source": "sklearn", "name": "iris", "max_levels": 5}
    [issue] = error_of(client.post("/jobs", json=spec), 422, "invalid_spec")["issues"]
    assert issue["field"] == "dataset.max_levels" and "source csv or upload" in issue["message"]
    assert client.get("/jobs").json()["total"] == 0
