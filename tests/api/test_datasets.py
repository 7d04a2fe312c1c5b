"""``/datasets``: uploads streamed to disk and stored once by sha256, refused files leave nothing, specs name them."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from _service import make_spec
from fastapi.testclient import TestClient
from test_service_errors import error_of

from api.cli import main as regtune
from api.client import Client
from api.settings import Settings
from api.worker import Runner

# The answers do not depend on the database (the 409 reads the jobs table the same way on both): SQLite.
pytestmark = pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)

CSV = "text/csv"
OCTET = "application/octet-stream"


@pytest.fixture
def settings(storage_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's settings with its data dir in ``tmp_path/data`` (the in-process runner reads it from env)."""
    data = tmp_path / "data"
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(data))
    return Settings(database_url=storage_url, api_token=None, data_dir=data, max_upload_bytes=64 * 1024,
                    lease_seconds=5, heartbeat_seconds=1, poll_seconds=0.2)


def stored(settings: Settings) -> list[str]:
    """Every file under the uploads folder, hidden temporary files included."""
    folder = settings.data_dir / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def table(rows: int = 60) -> bytes:
    """A numeric table with an integer class target: rows alternate two clusters."""
    lines = ["x1,x2,x3,label"]
    for i in range(rows):
        c = i % 2
        lines.append(f"{c * 2 + (i * 7 % 11) / 11:.4f},{(i * 5 % 13) / 13 - c:.4f},{(i % 3) * 0.5:.2f},{c}")
    return ("\n".join(lines) + "\n").encode()


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def test_a_csv_is_summarized_and_the_same_bytes_answer_the_same_id(client: TestClient, settings: Settings) -> None:
    body = b"price,kind,ok\n1.5,a,true\n,b,false\n3,,true\n"
    first = client.post("/datasets", content=body, headers={"content-type": CSV})
    assert first.status_code == 201, first.text
    sha = hashlib.sha256(body).hexdigest()
    assert first.json() == {"id": sha, "format": "csv", "bytes": len(body), "sha256": sha, "rows": 3, "shape": None,
                            "images": None,
                            "columns": [{"name": "price", "dtype": "float", "missing": 1},
                                        {"name": "kind", "dtype": "string", "missing": 1},
                                        {"name": "ok", "dtype": "boolean", "missing": 0}]}
    assert first.headers["location"] == f"/datasets/{sha}"
    again = client.post("/datasets?format=csv", content=body, headers={"content-type": OCTET})
    assert again.status_code == 200 and again.json() == first.json()
    assert client.get(f"/datasets/{sha}").json() == first.json()
    assert client.get("/datasets").json() == [first.json()]
    assert stored(settings) == [f"{sha}.csv", f"{sha}.json"]


def test_an_npz_is_summarized_by_its_arrays_shapes(client: TestClient) -> None:
    body = npz(X=np.zeros((6, 1, 2, 2), dtype=np.float32), y=np.arange(6), fold=np.array(["train"] * 6))
    r = client.post("/datasets?format=npz", content=body, headers={"content-type": OCTET})
    assert r.status_code == 201, r.text
    assert r.json()["rows"] == 6 and r.json()["shape"] == {"X": [6, 1, 2, 2], "y": [6], "fold": [6]}


@pytest.mark.parametrize(("body", "fmt", "where"), [
    (b"a,b\n1,2\n3\n", "csv", "line 3: 1 fields, but the header has 2"),
    (b"a,b\n1,2\n\xff\xfe,1\n", "csv", "line 3: not UTF-8"),
    (b'a,b\n1,"2\n', "csv", "line 2: not valid CSV"),
    (b"a,a\n1,2\n", "csv", "line 1: the header names column 'a' twice"),
    (b"a,b\n", "csv", "line 2: a CSV needs a header row and at least one data row"),
    (npz(X=np.zeros((3, 2))), "npz", "array 'y': missing; the file holds X"),
    (npz(X=np.zeros((3, 2)), y=np.zeros(4)), "npz", "array 'y': X must have an examples axis"),
    (npz(X=np.array([{"a": 1}], dtype=object), y=np.zeros(1)), "npz", "array 'X': holds Python objects"),
    (b"PK\x03\x04 not really a zip", "npz", "the archive: not an .npz"),
])
def test_a_file_that_does_not_parse_answers_422_naming_where_and_leaves_nothing(
        client: TestClient, settings: Settings, body: bytes, fmt: str, where: str) -> None:
    error = error_of(client.post(f"/datasets?format={fmt}", content=body, headers={"content-type": OCTET}),
                     422, "invalid_dataset")
    assert where in error["message"] and error["issues"][0]["field"] == "body"
    assert stored(settings) == []
    assert client.get("/datasets").json() == []


def parquet(columns: dict[str, list[Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, row_group_size=2)  # several row groups, read batch by batch
    return buf.getvalue()


def test_a_parquet_table_is_summarized_by_its_columns(client: TestClient) -> None:
    body = parquet({"price": [1.5, None, 3.0, 4.0, None], "kind": ["a", "b", None, "a", "c"],
                    "n": [1, 2, 3, 4, 5], "ok": [True, False, True, True, False]})
    r = client.post("/datasets", content=body, headers={"content-type": "application/vnd.apache.parquet"})
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "parquet" and r.json()["rows"] == 5
    assert r.json()["columns"] == [{"name": "price", "dtype": "float", "missing": 2},
                                   {"name": "kind", "dtype": "string", "missing": 1},
                                   {"name": "n", "dtype": "integer", "missing": 0},
                                   {"name": "ok", "dtype": "boolean", "missing": 0}]
    error = error_of(client.post("/datasets?format=parquet", content=table(), headers={"content-type": OCTET}),
                     422, "invalid_dataset")
    assert "the file: not Parquet" in error["message"]


def test_a_parquet_upload_tunes_as_the_same_table_in_csv(client: TestClient, runner: Runner,
                                                         storage_url: str) -> None:
    lines = [line.split(",") for line in table().decode().split()]
    columns = {name: [float(r[i]) if name != "label" else int(r[i]) for r in lines[1:]]
               for i, name in enumerate(lines[0])}
    losses = []
    for body, kind in ((table(), CSV), (parquet(columns), "application/vnd.apache.parquet")):
        dataset_id = client.post("/datasets", content=body, headers={"content-type": kind}).json()["id"]
        spec = upload_spec(dataset_id, name="table")
        spec["search"]["stages"][1]["trials"] = 2
        job = client.post("/jobs", json=spec).json()
        assert runner.run_once()
        assert client.get(f"/jobs/{job['id']}/report").status_code == 200
        losses.append(trial_losses(storage_url, job["study_prefix"], ["baseline", "l2"]))
    assert len(losses[0]) == 3 and losses[0] == losses[1]


def test_media_types_and_formats_are_checked(client: TestClient, settings: Settings) -> None:
    error = error_of(client.post("/datasets", content=b"a\n1\n", headers={"content-type": "text/plain"}),
                     415, "unsupported_media_type")
    assert "text/csv" in error["message"] and "'text/plain'" in error["message"]
    error = error_of(client.post("/datasets?format=xlsx", content=b"a\n1\n", headers={"content-type": OCTET}),
                     422, "invalid_request")
    assert error["issues"][0]["field"] == "query.format" and error["issues"][0]["value"] == "xlsx"
    error_of(client.post("/datasets", content=b"a\n1\n", headers={"content-type": OCTET}), 422, "invalid_request")
    assert stored(settings) == []


def test_too_big_answers_413_by_length_or_while_streaming_and_leaves_nothing(client: TestClient,
                                                                           settings: Settings) -> None:
    body = b"a,b\n" + b"1,2\n" * (settings.max_upload_bytes // 4)  # one line over the limit
    error = error_of(client.post("/datasets", content=body, headers={"content-type": CSV}), 413, "body_too_large")
    assert "REGTUNE_MAX_UPLOAD_BYTES" in error["message"] and "Content-Length" in error["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is found while the body streams in
        yield b"a,b\n"
        for _ in range(settings.max_upload_bytes // 4000 + 1):
            yield b"1,2\n" * 1000

    error = error_of(client.post("/datasets", content=chunked(), headers={"content-type": CSV}), 413,
                     "body_too_large")
    assert "more arrived" in error["message"]
    assert stored(settings) == []
    ok = client.post("/datasets", content=body[: settings.max_upload_bytes], headers={"content-type": CSV})
    assert ok.status_code == 201 and ok.json()["bytes"] == settings.max_upload_bytes  # at the limit: stored


def test_a_body_larger_than_the_request_limit_uploads(client: TestClient, settings: Settings) -> None:
    """REGTUNE_MAX_BODY_BYTES (1 MiB, job specs) does not apply to a dataset: it streams to disk."""
    limited = Settings(**(settings.model_dump() | {"max_upload_bytes": 3 * 2**20}))
    client.app.state.settings = limited  # type: ignore[attr-defined]
    body = b"a,b\n" + b"1,2\n" * 500_000  # 2 MB
    r = client.post("/datasets", content=body, headers={"content-type": CSV})
    assert r.status_code == 201, r.text
    assert r.json()["rows"] == 500_000 and r.json()["bytes"] == len(body)


def test_concurrent_uploads_of_one_file_store_it_once(client: TestClient, settings: Settings) -> None:
    body = table(200)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: client.post("/datasets", content=body, headers={"content-type": CSV}),
                                range(32)))
    assert sorted(r.status_code for r in answers) == [200] * 31 + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    sha = hashlib.sha256(body).hexdigest()
    assert stored(settings) == [f"{sha}.csv", f"{sha}.json"]  # no temporary file left behind
    assert (settings.data_dir / "uploads" / f"{sha}.csv").read_bytes() == body


def upload_spec(dataset_id: str, name: str = "up") -> dict[str, Any]:
    spec = make_spec(name)
    spec["dataset"] = {"source": "upload", "id": dataset_id, "target": "label"}
    return spec


def test_unknown_upload_answers_422_naming_dataset_id(client: TestClient) -> None:
    error = error_of(client.post("/jobs", json=upload_spec("0" * 64)), 422, "invalid_spec")
    assert [i["field"] for i in error["issues"]] == ["dataset.id"] and "POST /datasets" in error["issues"][0]["message"]
    error = error_of(client.post("/jobs", json=upload_spec("not-a-sha")), 422, "invalid_spec")
    assert error["issues"][0]["field"] == "dataset.id"
    assert client.get("/jobs").json()["total"] == 0


def test_a_spec_must_read_an_upload_as_its_format(client: TestClient) -> None:
    csv_id = client.post("/datasets", content=table(), headers={"content-type": CSV}).json()["id"]
    npz_id = client.post("/datasets?format=npz", content=npz(X=np.zeros((4, 2)), y=np.arange(4)),
                         headers={"content-type": OCTET}).json()["id"]
    no_target = upload_spec(csv_id)
    del no_target["dataset"]["target"]
    error = error_of(client.post("/jobs", json=no_target), 422, "invalid_spec")
    assert error["issues"][0]["field"] == "dataset.target" and "table (csv)" in error["issues"][0]["message"]
    error = error_of(client.post("/jobs", json=upload_spec(npz_id)), 422, "invalid_spec")
    assert error["issues"][0]["field"] == "dataset.target" and "npz" in error["issues"][0]["message"]
    assert client.get("/jobs").json()["total"] == 0


def test_an_uploaded_npz_tunes_through_the_service(client: TestClient, runner: Runner) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    body = npz(X=X, y=(X[:, 0] > 0).astype(np.int64))
    dataset_id = client.post("/datasets?format=npz", content=body, headers={"content-type": OCTET}).json()["id"]
    spec = make_spec("arrays")
    spec["dataset"] = {"source": "upload", "id": dataset_id}
    job = client.post("/jobs", json=spec).json()
    assert runner.run_once()
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    report = client.get(f"/jobs/{job['id']}/report").json()
    assert report["task"] == "classification" and report["baseline"]["features_kept"] == 3


def test_delete_is_refused_while_a_queued_job_uses_the_upload(client: TestClient, settings: Settings) -> None:
    dataset_id = client.post("/datasets", content=table(), headers={"content-type": CSV}).json()["id"]
    job = client.post("/jobs", json=upload_spec(dataset_id)).json()
    error = error_of(client.delete(f"/datasets/{dataset_id}"), 409, "dataset_in_use")
    assert job["id"] in error["message"]
    assert client.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/datasets/{dataset_id}").status_code == 204
    assert stored(settings) == []
    error_of(client.get(f"/datasets/{dataset_id}"), 404, "dataset_not_found")
    error_of(client.delete(f"/datasets/{dataset_id}"), 404, "dataset_not_found")
    assert "64 hex digits" in error_of(client.get("/datasets/..etc"), 404, "dataset_not_found")["message"]


def trial_losses(storage: str, prefix: str, stages: list[str]) -> list[float]:
    return [t.value for s in stages for t in optuna.load_study(study_name=f"{prefix}/{s}", storage=storage).trials
            if t.value is not None]


def test_an_uploaded_csv_tunes_through_the_service_as_regtune_run_tunes_the_file(
        client: TestClient, runner: Runner, settings: Settings, tmp_path: Path, storage_url: str) -> None:
    data, spec_file = tmp_path / "table.csv", tmp_path / "spec.yaml"
    data.write_bytes(table())
    spec = make_spec("same", trials=2)
    spec["dataset"] = {"source": "csv", "path": "table.csv", "target": "label"}
    spec_file.write_text(yaml.safe_dump(spec), encoding="utf-8")

    cli = Client(server="http://127.0.0.1", token="")
    cli._http = client  # the client's requests go to this app in-process: the same routes, no socket
    job = cli.submit(spec_file, data=data)
    assert job["status"] == "queued"  # (no GET before the run: GET /jobs/{id} may answer from a 1 s old view)
    assert runner.run_once()
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    served = trial_losses(storage_url, job["study_prefix"], ["baseline", "l2"])

    (settings.data_dir / "table.csv").write_bytes(data.read_bytes())  # `regtune run` reads it from the data dir
    local = f"sqlite:///{tmp_path}/run.db"
    assert regtune(["run", str(spec_file), "--storage", local, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(served) == 3 and served == trial_losses(local, "same", ["baseline", "l2"])
