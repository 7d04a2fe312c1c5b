"""Who may reach the service, and how: the token (any case of 'Bearer'), this machine only without one, the
Host, requests from other sites, content types, the read-only dashboard, JSON errors under the service's own
paths, the login page's session cookie, and the headers every answer carries."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _service import make_spec, regtune, worker_env
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from starlette.websockets import WebSocketDisconnect

from api.main import create_app
from api.settings import Settings

TOKEN, ADMIN = "user-token-0123456789", "admin-token-0123456789"
COOKIE = "regtune_session"
LOCAL = "http://127.0.0.1"


def error_of(r: Any, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    return message


@pytest.fixture
def storage_url(sqlite_url: str) -> str:
    """The database plays no part in these answers: SQLite alone."""
    return sqlite_url


@pytest.fixture
def secured(sqlite_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=sqlite_url, api_token=SecretStr(TOKEN), admin_token=SecretStr(ADMIN))
    with TestClient(create_app(settings), base_url="http://regtune.example") as c:
        yield c


def test_the_bearer_scheme_is_case_insensitive(secured: TestClient) -> None:
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert secured.get("/jobs", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200, scheme
    error_of(secured.get("/jobs", headers={"Authorization": f"Basic {TOKEN}"}), 401, "unauthorized")
    error_of(secured.get("/jobs", headers={"Authorization": f"bearer {TOKEN}x"}), 401, "unauthorized")


@pytest.mark.parametrize("field", ["api_token", "admin_token", "session_secret"])
def test_short_tokens_are_refused_at_startup(sqlite_url: str, field: str) -> None:
    with pytest.raises(ValidationError, match="at least 16 characters long, but got 1") as info:
        Settings(database_url=sqlite_url, **{field: SecretStr("x")})
    assert "'x'" not in str(info.value.errors(include_input=False))


def test_the_cli_names_the_variable_and_never_prints_the_token(sqlite_url: str) -> None:
    done = subprocess.run([regtune(), "serve"], capture_output=True, text=True, timeout=60,
                          env=worker_env(sqlite_url, REGTUNE_API_TOKEN="tiny-secret"))
    assert done.returncode == 2 and "REGTUNE_API_TOKEN: must be at least 16 characters long" in done.stderr
    assert "tiny-secret" not in done.stderr


def test_without_a_token_the_app_itself_answers_loopback_only(sqlite_url: str) -> None:
    """``uvicorn --factory api.main:create_app --host 0.0.0.0``: a request from the network is refused."""
    app = create_app(Settings(database_url=sqlite_url, api_token=None))
    with TestClient(app, base_url="http://10.1.2.3:8000") as remote:  # the address the request came in on
        message = error_of(remote.get("/jobs", headers={"Host": "127.0.0.1:8000"}), 403, "not_local")
        assert "10.1.2.3" in message and "REGTUNE_API_TOKEN" in message
        error_of(remote.get("/dashboard", headers={"Host": "localhost"}), 403, "not_local")
    for base in (LOCAL, "http://localhost:8000", "http://[::1]:8000"):
        with TestClient(app, base_url=base) as local:
            assert local.get("/jobs").status_code == 200, base


def test_without_a_token_the_host_must_be_a_loopback_name(sqlite_url: str) -> None:
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 reads nothing."""
    with TestClient(create_app(Settings(database_url=sqlite_url, api_token=None)), base_url=LOCAL) as client:
        message = error_of(client.get("/jobs", headers={"Host": "evil.example:8000"}), 400, "host_not_allowed")
        assert "'evil.example'" in message and "REGTUNE_ALLOWED_HOSTS" in message
        error_of(client.get("/", headers={"Host": "evil.example"}), 400, "host_not_allowed")
    allowed = Settings(database_url=sqlite_url, api_token=SecretStr(TOKEN), allowed_hosts="api.example")
    with TestClient(create_app(allowed), base_url="http://api.example") as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/jobs", headers=auth).status_code == 200
        error_of(client.get("/jobs", headers=auth | {"Host": "other.example"}), 400, "host_not_allowed")


def test_other_sites_cannot_change_anything(client: TestClient) -> None:
    spec = make_spec()
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}):
        message = error_of(client.post("/jobs", json=spec, headers=headers), 403, "cross_site")
        assert "this service's own pages" in message
        error_of(client.post("/jobs/0123456789ab/cancel", headers=headers), 403, "cross_site")
    assert client.get("/jobs").json()["total"] == 0
    same = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/jobs", json=spec, headers=same).status_code == 202
    assert client.get("/jobs", headers={"Origin": "https://evil.example"}).status_code == 200  # reads: CORS rules


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_job_specs_come_as_json_or_yaml_only(client: TestClient, content_type: str | None) -> None:
    body = yaml.safe_dump(make_spec()).encode()
    headers = {"content-type": content_type} if content_type else {}
    message = error_of(client.post("/jobs", content=body, headers=headers), 415, "unsupported_media_type")
    assert "application/json" in message and "application/yaml" in message
    for accepted in ("application/yaml", "application/x-yaml", "text/yaml", "application/json; charset=utf-8"):
        body = json.dumps(make_spec()).encode() if "json" in accepted else body
        assert client.post("/jobs", content=body, headers={"content-type": accepted}).status_code == 202, accepted


def test_websockets_pass_the_same_checks(secured: TestClient, client: TestClient) -> None:
    for path in ("/jobs", "/dashboard", "/api/studies"):
        with pytest.raises(WebSocketDisconnect) as info, secured.websocket_connect(path):
            pass
        assert info.value.code == 1008
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/api/studies",
                                                                      headers={"Origin": "https://evil.example"}):
        pass


def test_unknown_paths_and_methods_under_the_services_routes_answer_json(client: TestClient) -> None:
    for path in ("/jobs/0123456789ab/nothing", "/jobs/x/trials/y", "/healthz/x", "/models/x", "/readyz/x",
                 "/datasets/x/y"):
        assert "no route" in error_of(client.get(path), 404, "not_found")
    for method, path, allowed in (("DELETE", "/jobs", "GET, POST"), ("PUT", "/jobs/0123456789ab", "GET"),
                                  ("POST", "/healthz", "GET"), ("GET", "/jobs/0123456789ab/cancel", "POST"),
                                  ("DELETE", "/models", "GET")):
        r = client.request(method, path)
        assert method in error_of(r, 405, "method_not_allowed") and r.headers["allow"] == allowed


def test_an_oversized_chunked_body_to_the_dashboard_is_413(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, api_token=None, admin_token=SecretStr(ADMIN))
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        def chunks() -> Iterator[bytes]:
            for _ in range(20):
                yield b"#" * 65536

        admin = {"Authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
        error_of(client.post("/api/studies", content=chunks(), headers=admin), 413, "body_too_large")
        small = client.post("/api/studies", json={"study_name": "s", "directions": ["minimize"]}, headers=admin)
        assert small.status_code == 201, small.text  # under the limit, a chunked-or-not body still arrives whole


def test_the_dashboard_is_read_only_without_the_admin_token(secured: TestClient) -> None:
    user = {"Authorization": f"Bearer {TOKEN}"}
    job = secured.post("/jobs", json=make_spec(), headers=user).json()
    created = secured.post("/api/studies", json={"study_name": f"x-{job['id']}", "directions": ["minimize"]},
                           headers={"Authorization": f"Bearer {ADMIN}"})
    assert created.status_code == 201, created.text
    sid = created.json()["study_summary"]["study_id"]
    for method, path in (("POST", "/api/studies"), ("DELETE", f"/api/studies/{sid}"),
                         ("POST", f"/api/studies/{sid}/rename"), ("PUT", f"/api/studies/{sid}/note"),
                         ("POST", "/api/trials/1/tell"), ("POST", "/incompatible-rdb-schema")):
        message = error_of(secured.request(method, path, json={}, headers=user), 403, "read_only")
        assert "REGTUNE_ADMIN_TOKEN" in message
    assert secured.get("/api/studies", headers=user).status_code == 200
    assert secured.delete(f"/api/studies/{sid}", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 204


def test_every_answer_forbids_framing_and_sniffing(secured: TestClient) -> None:
    for path, headers in (("/", {"Authorization": f"Bearer {TOKEN}"}), ("/dashboard", {}), ("/jobs", {}),
                          ("/login", {}), ("/docs", {"Authorization": f"Bearer {TOKEN}"})):
        r = secured.get(path, headers=headers, follow_redirects=False)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


def test_login_sets_a_signed_expiring_session_cookie(secured: TestClient) -> None:
    page = secured.get("/jobs/0123456789ab/report.html", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/jobs/0123456789ab/report.html"
    assert 'type="password"' in secured.get("/login").text
    wrong = secured.post("/login", data={"token": "not-the-token-at-all", "next": "/"}, follow_redirects=False)
    assert wrong.status_code == 401 and "That token is wrong" in wrong.text and COOKIE not in wrong.cookies
    done = secured.post("/login", data={"token": TOKEN, "next": "//evil.example/x"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/"  # never off to another site
    cookie = done.headers["set-cookie"]
    assert re.search(r"HttpOnly", cookie, re.I) and re.search(r"SameSite=strict", cookie, re.I)
    assert "Max-Age=43200" in cookie and "Secure" not in cookie and TOKEN not in cookie
    assert secured.get("/jobs").status_code == 200 and secured.get("/dashboard").status_code == 200
    assert secured.post("/jobs", json=make_spec()).status_code == 202
    error_of(secured.post("/api/studies", json={}), 403, "read_only")  # a user's session: no dashboard writes
    secured.post("/logout", follow_redirects=False)
    error_of(secured.get("/jobs"), 401, "unauthorized")


def test_a_forged_or_expired_cookie_is_no_session(secured: TestClient, sqlite_url: str) -> None:
    from api.auth import Credentials

    credentials = Credentials.of(Settings(database_url=sqlite_url, api_token=SecretStr(TOKEN),
                                          admin_token=SecretStr(ADMIN)))
    good = credentials.issue("user")
    _, expires, signature = good.split(".")
    for forged in (f"admin.{expires}.{signature}", f"user.{int(expires) + 9999}.{signature}",
                   credentials.issue("user", now=0), "user", ""):
        secured.cookies.set(COOKIE, forged)
        error_of(secured.get("/jobs"), 401, "unauthorized")
    secured.cookies.set(COOKIE, good)
    assert secured.get("/jobs").status_code == 200
    other = Credentials.of(Settings(database_url=sqlite_url, api_token=SecretStr(TOKEN + "-new")))
    secured.cookies.set(COOKIE, other.issue("user"))  # signed with another token's secret
    error_of(secured.get("/jobs"), 401, "unauthorized")


def test_the_login_cookie_is_secure_over_https(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, api_token=SecretStr(TOKEN))
    with TestClient(create_app(settings), base_url="https://regtune.example") as client:
        done = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert done.status_code == 303 and "Secure" in done.headers["set-cookie"]


def test_login_page_is_there_only_with_a_token(client: TestClient, tmp_path: Path) -> None:
    error_of(client.get("/login"), 404, "no_login")
