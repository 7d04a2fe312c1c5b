"""Uploaded zips of images (and image-shaped npz arrays): summarized, refused when unsafe, tuned through the service."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _images import CLASSES, write_images, zip_folder, zip_members
from _service import make_spec
from fastapi.testclient import TestClient
from test_service_errors import error_of

from api.client import Client, with_upload
from api.settings import Settings
from api.worker import Runner

pytestmark = pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)

OCTET = "application/octet-stream"
CNN = {"kind": "cnn", "channels": [4], "kernel": 3, "hidden": [8]}


@pytest.fixture
def settings(storage_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's settings, data dir in ``tmp_path/data``, small caps on a zip's members and unpacked bytes."""
    data = tmp_path / "data"
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(data))
    return Settings(database_url=storage_url, api_token=None, data_dir=data, max_upload_bytes=256 * 1024,
                    max_upload_files=40, max_unpacked_bytes=200_000, lease_seconds=5, heartbeat_seconds=1,
                    poll_seconds=0.2)


def on_disk(root: Path) -> list[str]:
    """Every file and folder under ``root`` (the data dir and what lies beside it), hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def cnn_spec(name: str, dataset: dict[str, Any]) -> dict[str, Any]:
    spec = make_spec(name, trials=2)
    spec["dataset"] = dataset
    spec["model"] = CNN
    spec["training"]["batch_size"] = 8
    spec["search"]["space"] = {"dropout": {"low": 0.0, "high": 0.3}}
    spec["search"]["stages"] = [{"name": "baseline", "params": [], "trials": 1},
                                {"name": "dropout", "params": ["dropout"], "trials": 2}]
    return spec


def run_job(client: TestClient, runner: Runner, job: dict[str, Any]) -> dict[str, Any]:
    assert runner.run_once()
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    report: dict[str, Any] = client.get(f"/jobs/{job['id']}/report").json()
    return report


def test_a_zip_of_images_is_summarized_and_tunes_through_the_service(
        client: TestClient, runner: Runner, tmp_path: Path) -> None:
    body = zip_folder(write_images(tmp_path / "shapes"), top="shapes")  # zipped as a folder: shapes/<class>/...
    r = client.post("/datasets?format=zip", content=body, headers={"content-type": OCTET})
    assert r.status_code == 201, r.text
    summary = r.json()
    assert summary["format"] == "zip" and summary["rows"] == 36
    assert summary["images"] == {"classes": dict.fromkeys(CLASSES, 12), "sizes": [[8, 8]]}
    assert summary["shape"] == {"X": [36, 1, 8, 8]} and summary["columns"] is None
    again = client.post("/datasets", content=body, headers={"content-type": "application/zip"})
    assert again.status_code == 200 and again.json()["id"] == summary["id"]

    # `regtune submit spec.yaml --data shapes.zip`: uploads (the same bytes: the same id), keeps size
    (tmp_path / "shapes.zip").write_bytes(body)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(cnn_spec("pics", {"source": "images", "path": "x", "size": [6, 6]})))
    cli = Client(server="http://127.0.0.1", token="")
    cli._http = client  # the client's requests go to this app in-process
    job = cli.submit(spec_file, data=tmp_path / "shapes.zip")
    assert with_upload(spec_file.read_bytes(), summary["id"])["dataset"] == {
        "source": "upload", "id": summary["id"], "size": [6, 6]}  # what it sent: the size kept, the path gone
    how = {"target": "label", "task": "classification", "split": {"test": 0.2}, "standardize": False,
           "max_levels": 4, "size": [6, 6], "channels": 3}  # a table's fields and an image zip's are all kept
    sent = with_upload(yaml.safe_dump({"dataset": {"source": "csv", "path": "h.csv", **how}}).encode(), "f00")
    assert sent["dataset"] == {"source": "upload", "id": "f00", **how}
    report = run_job(client, runner, job)
    assert report["task"] == "classification"
    assert [(s["name"], s["completed"]) for s in report["stages"]] == [("baseline", 1), ("dropout", 2)]


def png() -> bytes:
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), dtype=np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def deflated(name: str, size: int) -> bytes:
    """A zip whose member ``name`` unpacks to ``size`` zero bytes (a few hundred bytes packed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/1.png", png())
        archive.writestr(name, bytes(size))
    return buf.getvalue()


@pytest.mark.parametrize(("body", "status", "says"), [
    (zip_members({"a/1.png": png(), "../evil.png": png()}), 422, "member '../evil.png' must not have a '..' part"),
    (zip_members({"a/1.png": png(), "a/../../evil.png": png()}), 422, "must not have a '..' part"),
    (zip_members({"a/1.png": png(), "/tmp/evil.png": png()}), 422, "member '/tmp/evil.png' must be a relative path"),
    (zip_members({"a/1.png": png(), "C:/evil.png": png()}), 422, "member 'C:/evil.png' must be a relative path"),
    (zip_members({"a/1.png": png()}, links=("b/link.png",)), 422, "member 'b/link.png' must not be a symbolic link"),
    (zip_members({f"{'ab'[i % 2]}/{i}.png": png() for i in range(41)}), 422,
     "member 'a/40.png': past the 40 members a zip may hold (REGTUNE_MAX_UPLOAD_FILES)"),
    (deflated("b/huge.png", 300_000), 413, "past it at member 'b/huge.png'"),
    (zip_members({"a/1.png": png(), "b/2.png": b"not a png"}), 422, "b/2.png in the zip cannot be read as an image"),
    (zip_members({"a/1.png": png(), "loose.png": png()}), 422, "member 'loose.png' must sit in a class folder"),
    (zip_members({"a/1.png": png(), "a/2.png": png()}), 422, "at least 2 class folders"),
    (b"PK\x03\x04 not really a zip", 422, "the archive: not a zip"),
])
def test_an_unsafe_or_unreadable_zip_is_refused_naming_the_member_and_leaves_nothing(
        client: TestClient, settings: Settings, tmp_path: Path, body: bytes, status: int, says: str) -> None:
    before = on_disk(tmp_path)
    code = "body_too_large" if status == 413 else "invalid_dataset"
    error = error_of(client.post("/datasets?format=zip", content=body, headers={"content-type": OCTET}), status, code)
    assert says in error["message"], error["message"]
    assert [p for p in on_disk(tmp_path) if p not in before] == ["data", "data/uploads"]  # the folder, empty
    assert client.get("/datasets").json() == []


def test_a_spec_reads_a_zip_as_images_and_only_a_zip(client: TestClient, tmp_path: Path) -> None:
    zip_id = client.post("/datasets", content=zip_folder(write_images(tmp_path / "shapes")),
                         headers={"content-type": "application/zip"}).json()["id"]
    csv_id = client.post("/datasets", content=b"a,label\n1,0\n2,1\n", headers={"content-type": "text/csv"}).json()["id"]
    for dataset, field in (({"id": zip_id, "target": "label"}, "dataset.target"),
                           ({"id": zip_id, "max_levels": 5}, "dataset.max_levels"),
                           ({"id": csv_id, "target": "label", "size": [4, 4]}, "dataset.size"),
                           ({"id": csv_id, "target": "label", "channels": 3}, "dataset.channels")):
        error = error_of(client.post("/jobs", json=cnn_spec("x", {"source": "upload", **dataset})), 422,
                         "invalid_spec")
        assert [i["field"] for i in error["issues"]] == [field]
    assert client.get("/jobs").json()["total"] == 0


def test_an_uploaded_npz_of_images_tunes_through_the_service_with_the_cnn(client: TestClient, runner: Runner) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(48) % 2
    X = rng.normal(size=(48, 1, 6, 6)).astype(np.float32)
    X[:, :, 2:4, 2:4] += np.where(y == 1, 2.0, -2.0)[:, None, None, None]
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y, fold=np.array(["train"] * 32 + ["val"] * 8 + ["test"] * 8))
    summary = client.post("/datasets?format=npz", content=buf.getvalue(), headers={"content-type": OCTET}).json()
    assert summary["shape"]["X"] == [48, 1, 6, 6]
    job = client.post("/jobs", json=cnn_spec("arrays", {"source": "upload", "id": summary["id"]})).json()
    report = run_job(client, runner, job)
    assert report["task"] == "classification" and report["chosen"]["test_loss"] is not None
