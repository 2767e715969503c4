"""API keys against a real server: missing, wrong, rotated, fail-closed and explicitly disabled; plain keys
(FACEBRIDGE_API_KEYS, or an older keys file of one key per line) keep every scope.
Scoped keys, limits and the audit trail: tests/test_scoped_keys.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import API_KEYS, MODELS_DIR, LiveServer

PROTECTED = [
    ("GET", "/models"),
    ("GET", "/mappings"),
    ("POST", "/translate"),
    ("POST", "/verify"),
    ("POST", "/embed"),
]


def _assert_unauthorized(response: httpx.Response, says: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == "urn:facebridge:problem:unauthorized" and says in body["detail"]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_routes_need_a_valid_key(server: LiveServer, method: str, path: str) -> None:
    missing = httpx.request(method, server.url + path, json={})
    _assert_unauthorized(missing, "send an API key")
    wrong = httpx.request(method, server.url + path, json={}, headers={"X-API-Key": API_KEYS[0] + "x"})
    _assert_unauthorized(wrong, "does not hold a valid key")


def test_both_keys_of_a_rotation_are_accepted_and_never_logged(server: LiveServer) -> None:
    for key in API_KEYS:
        assert httpx.get(server.url + "/mappings", headers={"X-API-Key": key}).status_code == 200
    assert httpx.get(server.url + "/healthz").status_code == 200  # probes stay open
    assert httpx.get(server.url + "/readyz").status_code == 200
    log = server.log()
    assert all(key not in log for key in API_KEYS)
    assert "plain key(s) from FACEBRIDGE_API_KEYS, each with every scope" in log  # said at start-up


def test_openapi_declares_the_key_header(server: LiveServer) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert spec["paths"]["/translate"]["post"]["security"] == [{"APIKeyHeader": ["translate"]}]
    assert spec["paths"]["/mappings"]["get"]["security"] == [{"APIKeyHeader": []}]  # any valid key
    assert "security" not in spec["paths"]["/healthz"]["get"]


@pytest.fixture
def bare_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    env = {"FACEBRIDGE_MODELS_DIR": str(MODELS_DIR), "FACEBRIDGE_LOAD_MODELS": "[]", **request.param}
    live = LiveServer(env, tmp_path / "server.log")
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


@pytest.mark.parametrize("bare_server", [{}], indirect=True)
def test_without_any_key_the_service_fails_closed(bare_server: LiveServer) -> None:
    _assert_unauthorized(httpx.get(bare_server.url + "/mappings"), "no API key configured")
    assert "no API key configured" in bare_server.log()


@pytest.mark.parametrize("bare_server", [{"FACEBRIDGE_AUTH_DISABLED": "true"}], indirect=True)
def test_disabling_authentication_is_explicit_and_loud(bare_server: LiveServer) -> None:
    assert httpx.get(bare_server.url + "/mappings").status_code == 200
    assert "AUTHENTICATION IS OFF" in bare_server.log()


def test_keys_file_with_comments(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotated in 2026-11\nfile-key-one\n\n  file-key-two  \n")
    live = LiveServer(
        {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_LOAD_MODELS": "[]",
            "FACEBRIDGE_API_KEYS_FILE": str(keys),
        },
        tmp_path / "server.log",
    )
    try:
        live.wait_ready()
        assert httpx.get(live.url + "/models", headers={"X-API-Key": "file-key-two"}).status_code == 200
        _assert_unauthorized(
            httpx.get(live.url + "/models", headers={"X-API-Key": "# rotated in 2026-11"}), "valid"
        )
        # an older file's keys have every scope, admin's included, and the log says how to move on
        reload = httpx.post(live.url + "/admin/reload-mappings", headers={"X-API-Key": "file-key-one"})
        assert reload.status_code == 200, reload.text
        log = live.log()
        assert "2 plain key(s), one per line: each has every scope" in log
        assert "facebridge keys create" in log and "file-key-one" not in log
    finally:
        live.stop()
