"""Least privilege and an audit trail, against real `facebridge serve` processes on real ports:

- every route needs its scope: a key lacking it gets 403 naming it, a key with it gets through;
- expired, revoked, wrong and unknown keys get 401; a key added to the file works within a second;
- rotating a key (facebridge keys rotate) takes effect without a restart, while a slow request that
  started with the old key still completes;
- per-key limits: requests per second and in flight answer 429 with Retry-After, other keys unaffected;
- the audit log holds one line per erasure, recording and reload, with the key id and never the key,
  in the file and in the pair store's table; `facebridge audit` reads both;
- the keys file never holds a key in clear (fast tier, with the token bucket and the file format).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from facebridge.cli import build_parser
from facebridge.keyfile import (
    ALL_SCOPES,
    KeyFileError,
    KeyLimits,
    check_hash,
    create_key,
    parse_keys,
    read_keys,
    revoke_key,
    split_key,
)
from facebridge.service.security import KeyLimiter

from .conftest import MODELS_DIR, ROOT, LiveServer

A, B = "arcface-mbf128", "sirius-mbf192"
DIMS = {A: 128, B: 192}
OPEN = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
# the scope table of docs/hardening.md; routes not named here need no more than a valid key
EXPECTED_SCOPES = {
    ("post", "/embed"): ["embed"],
    ("post", "/translate"): ["translate"],
    ("post", "/verify"): ["verify"],
    ("post", "/pairs"): ["pairs:record"],
    ("delete", "/pairs"): ["pairs:erase"],
    ("get", "/pairs/stats"): ["pairs:read"],
    ("post", "/admin/reload-mappings"): ["admin"],
    ("get", "/models"): [],
    ("get", "/mappings"): [],
    ("get", "/calibration"): [],
}


def template(model: str, seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(size=DIMS[model]).astype(np.float32).tolist()


def translate_body(rows: int = 1) -> dict[str, Any]:
    return {"source": A, "target": B, "embeddings": [template(A, i) for i in range(rows)]}


def facebridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facebridge", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:facebridge:problem:{code}", body
    return body


# ---------------------------------------------------------------------------------------------- a deployment
@dataclass
class Deployment:
    live: LiveServer
    file: Path
    keys: dict[str, str]  # name -> key
    ids: dict[str, str]  # name -> key id
    audit: Path

    def get(self, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, key, **kwargs)

    def request(self, method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **({"X-API-Key": key} if key is not None else {})}
        return httpx.request(method, self.live.url + path, headers=headers, timeout=60.0, **kwargs)

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]


def make_keys(file: Path, wanted: dict[str, tuple[list[str], dict[str, Any]]]) -> tuple[dict, dict]:
    keys, ids = {}, {}
    for name, (scopes, options) in wanted.items():
        entry, keys[name] = create_key(file, name, scopes, **options)
        ids[name] = entry.id
    return keys, ids


def start(directory: Path, file: Path, keys: dict, ids: dict, **env: str) -> Deployment:
    audit = directory / "audit.log"
    live = LiveServer(
        {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_PROVIDERS": "cpu",
            "FACEBRIDGE_LOAD_MODELS": "[]",  # maps and the pair store need no model file
            "FACEBRIDGE_API_KEYS_FILE": str(file),
            "FACEBRIDGE_PAIRS_DB": str(directory / "pairs.db"),
            "FACEBRIDGE_AUDIT_LOG": str(audit),
            **env,
        },
        directory / "server.log",
    )
    live.wait_ready()
    return Deployment(live, file, keys, ids, audit)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("scoped")
    file = directory / "keys.json"
    past = datetime.now(UTC) - timedelta(days=1)
    wanted: dict[str, tuple[list[str], dict[str, Any]]] = {"all": (["all"], {})}
    for scope in ALL_SCOPES:
        wanted[f"only-{scope.replace(':', '-')}"] = ([scope], {})
        wanted[f"without-{scope.replace(':', '-')}"] = ([s for s in ALL_SCOPES if s != scope], {})
    wanted |= {
        "expired": (["translate"], {"expires": past}),
        "revoked": (["translate"], {}),
        "rotating": (["translate"], {}),
        "limited": (["translate"], {"limits": KeyLimits(rate_per_s=1, burst=2)}),
        "single": (["translate"], {"limits": KeyLimits(max_concurrent=1)}),
    }
    keys, ids = make_keys(file, wanted)
    revoke_key(file, "revoked")
    live = start(directory, file, keys, ids)
    try:
        yield live
    finally:
        live.live.stop()


def only(scope: str) -> str:
    return f"only-{scope.replace(':', '-')}"


def without(scope: str) -> str:
    return f"without-{scope.replace(':', '-')}"


def operations(spec: dict[str, Any]) -> list[tuple[str, str, list[str] | None]]:
    return [
        (method, path, operation.get("x-required-scopes"))
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]


def call(deployment: Deployment, method: str, path: str, key: str | None) -> httpx.Response:
    """An operation with a minimal request: enough to get past the key check (the body may be wrong)."""
    path = path.replace("{source}", A).replace("{target}", B)
    kwargs: dict[str, Any] = {"json": {}} if method in ("post", "put", "patch") else {}
    if (method, path) == ("delete", "/pairs"):
        kwargs = {"params": {"subject": "nobody"}}
    return deployment.request(method.upper(), path, key, **kwargs)


# ---------------------------------------------------------------------------------------------- scopes
def test_openapi_states_the_scope_of_every_operation(deployment: Deployment) -> None:
    spec = deployment.get("/openapi.json", None).json()
    found = {(m, p): scopes for m, p, scopes in operations(spec)}
    for operation, expected in EXPECTED_SCOPES.items():
        assert found[operation] == expected, operation
    for (method, path), scopes in found.items():
        operation = spec["paths"][path][method]
        if (method, path) in OPEN:
            assert "security" not in operation and scopes is None
            continue
        assert scopes is not None and set(scopes) <= set(ALL_SCOPES), (method, path)
        assert operation["security"] == [{"APIKeyHeader": scopes}]
        assert ("scope:** `" in operation["description"]) == bool(scopes), operation["description"]
        assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)
        if path.startswith("/admin/"):
            assert "admin" in scopes


def test_a_key_lacking_the_routes_scope_gets_403_naming_it(deployment: Deployment) -> None:
    spec = deployment.get("/openapi.json", None).json()
    scoped = [(m, p, s) for m, p, s in operations(spec) if s]
    assert len(scoped) >= 7
    for method, path, scopes in scoped:
        [scope] = scopes
        refused = call(deployment, method, path, deployment.keys[without(scope)])
        body = assert_problem(refused, 403, "missing-scope")
        assert f"'{scope}'" in body["detail"] and deployment.ids[without(scope)] in body["detail"]
        allowed = call(deployment, method, path, deployment.keys[only(scope)])
        assert allowed.status_code not in (401, 403), (method, path, allowed.text)
        assert call(deployment, method, path, None).status_code == 401


def test_listing_routes_take_any_valid_key(deployment: Deployment) -> None:
    spec = deployment.get("/openapi.json", None).json()
    listing = [(m, p) for m, p, s in operations(spec) if s == []]
    assert {("get", "/models"), ("get", "/mappings"), ("get", "/calibration")} <= set(listing)
    for method, path in listing:
        answer = call(deployment, method, path, deployment.keys[only("pairs:read")])
        assert answer.status_code not in (401, 403), (method, path, answer.text)
        assert_problem(call(deployment, method, path, None), 401, "unauthorized")
    assert deployment.get("/mappings", deployment.keys[only("embed")]).status_code == 200


def test_recording_from_embed_needs_pairs_record_too(deployment: Deployment) -> None:
    body = {"image": {"data": "AAAA"}, "models": [A, B], "largest_only": True, "record": {"subject": "s"}}
    refused = deployment.request("POST", "/embed", deployment.keys[only("embed")], json=body)
    assert "'pairs:record'" in assert_problem(refused, 403, "missing-scope")["detail"]
    allowed = deployment.request("POST", "/embed", deployment.keys["all"], json=body)
    assert allowed.status_code not in (401, 403), allowed.text  # 409: the recognizers are not loaded here


# ---------------------------------------------------------------------------------------------- 401
def test_expired_revoked_wrong_and_unknown_keys_get_401(deployment: Deployment) -> None:
    def refused(key: str, says: str) -> None:
        body = assert_problem(deployment.get("/mappings", key), 401, "unauthorized")
        assert says in body["detail"] and key not in json.dumps(body)

    refused(deployment.keys["expired"], "has expired")
    refused(deployment.keys["revoked"], "was revoked")
    key_id, secret = split_key(deployment.keys["all"]) or ("", "")
    refused(f"fb_{key_id}_{secret[:-1]}x", "does not hold a valid key")  # right id, wrong secret
    refused(f"fb_00000000_{secret}", "does not hold a valid key")  # unknown id
    refused("not-a-key", "does not hold a valid key")
    assert deployment.get("/mappings", deployment.keys["all"]).status_code == 200
    metrics = deployment.get("/metrics", None).text
    assert (
        f'facebridge_key_requests_total{{key_id="{deployment.ids["expired"]}",outcome="expired"}}' in metrics
    )
    assert (
        f'facebridge_key_requests_total{{key_id="{deployment.ids["revoked"]}",outcome="revoked"}}' in metrics
    )
    assert not any(key in metrics for key in deployment.keys.values())


def test_a_key_added_at_run_time_works_at_once_and_stops_when_it_expires(deployment: Deployment) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=6)
    entry, key = create_key(deployment.file, "short-lived", ["translate"], expires=expires)
    wait_for(lambda: deployment.get("/mappings", key).status_code == 200, 5.0, "the new key to be read")
    answer = deployment.request("POST", "/translate", key, json=translate_body())
    assert answer.status_code == 200, answer.text
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
    body = assert_problem(deployment.get("/mappings", key), 401, "unauthorized")
    assert f"key {entry.id} (short-lived) has expired" in body["detail"]


# ---------------------------------------------------------------------------------------------- rotation
class SlowRequest:
    """POST /translate whose body is sent in two parts, the second only when released."""

    def __init__(self, deployment: Deployment, key: str) -> None:
        self.body = json.dumps(translate_body(3)).encode()
        self.release = threading.Event()
        self.sent_first = threading.Event()
        self.answer: httpx.Response | None = None
        self.thread = threading.Thread(target=self._run, args=(deployment, key))
        self.thread.start()
        assert self.sent_first.wait(10)

    def _chunks(self) -> Iterator[bytes]:
        yield self.body[:20]
        self.sent_first.set()
        self.release.wait(30)
        yield self.body[20:]

    def _run(self, deployment: Deployment, key: str) -> None:
        self.answer = deployment.request(
            "POST", "/translate", key, content=self._chunks(), headers={"content-type": "application/json"}
        )

    def finish(self) -> httpx.Response:
        self.release.set()
        self.thread.join(30)
        assert self.answer is not None
        return self.answer


def test_rotation_takes_effect_without_restart_and_spares_a_request_in_flight(
    deployment: Deployment,
) -> None:
    old = deployment.keys["rotating"]
    assert deployment.get("/mappings", old).status_code == 200
    slow = SlowRequest(deployment, old)  # authenticated with the old key, body still coming
    time.sleep(0.5)
    rotated = facebridge("keys", "rotate", "--file", str(deployment.file), "rotating")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.split()[-1]  # the key is the last word of the output
    assert split_key(new) is not None and split_key(new)[0] == deployment.ids["rotating"]  # type: ignore[index]
    wait_for(lambda: deployment.get("/mappings", old).status_code == 401, 5.0, "the old key to be refused")
    assert deployment.get("/mappings", new).status_code == 200
    answer = slow.finish()
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["embeddings"]) == 3 and len(answer.json()["embeddings"][0]) == DIMS[B]
    deployment.keys["rotating"] = new
    reloads = [r for r in deployment.audit_lines() if r["action"] == "keys.reload"]
    assert reloads and reloads[-1]["outcome"] == "applied" and reloads[-1]["file"] == str(deployment.file)


# ---------------------------------------------------------------------------------------------- limits
def test_a_keys_rate_limit_answers_429_with_retry_after_and_spares_other_keys(
    deployment: Deployment,
) -> None:
    limited, other = deployment.keys["limited"], deployment.keys["all"]
    answers = [deployment.get("/mappings", limited) for _ in range(6)]
    assert [a.status_code for a in answers[:2]] == [200, 200]  # the burst
    refused = next(a for a in answers if a.status_code == 429)
    body = assert_problem(refused, 429, "too-many-requests")
    assert "1 requests/s (burst 2)" in body["detail"] and int(refused.headers["retry-after"]) >= 1
    assert deployment.get("/mappings", other).status_code == 200  # another key is not affected
    time.sleep(int(refused.headers["retry-after"]) + 0.1)
    assert deployment.get("/mappings", limited).status_code == 200
    metrics = deployment.get("/metrics", None).text
    line = f'facebridge_key_requests_total{{key_id="{deployment.ids["limited"]}",outcome="rate-limited"}}'
    assert line in metrics
    assert (
        f'facebridge_key_requests_total{{key_id="{deployment.ids["limited"]}",outcome="served"}}' in metrics
    )
    assert limited not in metrics


def test_a_keys_concurrency_limit_answers_429_and_spares_other_keys(deployment: Deployment) -> None:
    single, other = deployment.keys["single"], deployment.keys["all"]
    assert deployment.get("/mappings", single).status_code == 200  # its hash checked once, before
    slow = SlowRequest(deployment, single)
    try:
        wait_for(
            lambda: deployment.get("/mappings", single).status_code == 429, 5.0, "the second to be refused"
        )
        refused = deployment.get("/mappings", single)
        body = assert_problem(refused, 429, "too-many-requests")
        assert "1 requests in flight; its limit is 1" in body["detail"] and refused.headers["retry-after"]
        assert deployment.get("/mappings", other).status_code == 200
    finally:
        answer = slow.finish()
    assert answer.status_code == 200, answer.text
    assert deployment.get("/mappings", single).status_code == 200  # the slot is free again


# ---------------------------------------------------------------------------------------------- audit
def pair(subject: str, seed: int) -> dict[str, Any]:
    return {"subject": subject, "a": {"model": A, "embedding": template(A, seed)},
            "b": {"model": B, "embedding": template(B, seed + 1)}}  # fmt: skip


def test_the_audit_log_holds_one_line_per_erasure_recording_and_reload(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    keys, ids = make_keys(
        file,
        {"recorder": (["pairs:record"], {}), "eraser": (["pairs:erase"], {}), "operator": (["admin"], {})},
    )
    deployment = start(tmp_path, file, keys, ids)
    try:
        recorded = deployment.request(
            "POST", "/pairs", keys["recorder"], json={"pairs": [pair("s0", 0), pair("s1", 2)]}
        )
        assert recorded.status_code == 201 and recorded.json() == {"recorded": 2}
        erased = deployment.request("DELETE", "/pairs", keys["eraser"], params={"subject": "s0"})
        assert erased.status_code == 200 and erased.json() == {"deleted": 1}  # the answer counts the rows
        assert_problem(deployment.request("DELETE", "/pairs", keys["recorder"], params={"subject": "s1"}),
                       403, "missing-scope")  # fmt: skip
        assert_problem(deployment.get("/pairs/stats", None), 401, "unauthorized")
        reload = deployment.request("POST", "/admin/reload-mappings", keys["operator"])
        assert reload.status_code == 200 and reload.json()["applied"] is True
        deployment.live.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: sum(r["action"] == "mappings.reload" for r in deployment.audit_lines()) == 2,
            10.0,
            "the SIGHUP reload",
        )
        wait_for(lambda: any(r["action"] == "keys.reload" for r in deployment.audit_lines()), 10.0, "keys")
        lines = deployment.audit_lines()
        by_action: dict[str, list[dict[str, Any]]] = {}
        for line in lines:
            by_action.setdefault(line["action"], []).append(line)
        [record] = by_action["pairs.record"]
        assert (record["key_id"], record["route"], record["method"], record["outcome"]) == (
            ids["recorder"], "/pairs", "POST", "ok")  # fmt: skip
        assert record["counts"] == {"pairs": 2, "subjects": 2}
        [erase] = by_action["pairs.erase"]
        assert (erase["key_id"], erase["subject"], erase["counts"], erase["outcome"]) == (
            ids["eraser"], "s0", {"deleted": 1}, "ok")  # fmt: skip
        by_route = {r["route"]: r for r in by_action["mappings.reload"]}
        assert by_route["/admin/reload-mappings"]["key_id"] == ids["operator"]
        assert by_route["SIGHUP"]["key_id"] is None and by_route["SIGHUP"]["outcome"] == "applied"
        assert by_route["/admin/reload-mappings"]["counts"]["maps"] > 0
        [forbidden] = by_action["auth.forbidden"]
        assert forbidden["key_id"] == ids["recorder"] and "'pairs:erase'" in forbidden["detail"]
        [unauthorized] = by_action["auth.unauthorized"]
        assert unauthorized["key_id"] is None and unauthorized["outcome"] == "missing"
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]) for r in lines)
        assert stat.S_IMODE(os.stat(deployment.audit).st_mode) == 0o600

        # the same records in the pair store's table, read by `facebridge audit --db`
        def from_table() -> list[dict[str, Any]]:
            read = facebridge("audit", "--db", str(tmp_path / "pairs.db"), "--json")
            assert read.returncode == 0, read.stderr
            return [json.loads(line) for line in read.stdout.splitlines()]

        wait_for(lambda: len(from_table()) == len(lines), 10.0, "the audit_log table")
        table = from_table()
        assert [r["action"] for r in table] == [r["action"] for r in lines]
        assert [r["counts"] for r in table] == [r["counts"] for r in lines]
        assert [r["key_id"] for r in table] == [r["key_id"] for r in lines]

        # `facebridge audit` on the file: filtered by action, as JSON and as a table
        pairs_only = facebridge("audit", "--file", str(deployment.audit), "--action", "pairs", "--json")
        assert [json.loads(x)["action"] for x in pairs_only.stdout.splitlines()] == [
            "pairs.record",
            "pairs.erase",
        ]
        text = facebridge(
            "audit", "--file", str(deployment.audit), "--action", "pairs.erase", "--since", "1h"
        )
        assert text.returncode == 0 and "s0" in text.stdout and "deleted=1" in text.stdout
        later = facebridge("audit", "--file", str(deployment.audit), "--since", "2099-01-01", "--json")
        assert later.returncode == 0 and later.stdout == ""
    finally:
        deployment.live.stop()
    # never a key: not in the audit file, the service log or the database's files
    files = [deployment.audit, tmp_path / "server.log", *tmp_path.glob("pairs.db*")]
    for key in keys.values():
        secret = (split_key(key) or ("", ""))[1]
        for path in files:
            data = path.read_bytes()
            assert key.encode() not in data and secret.encode() not in data, path


# ---------------------------------------------------------------------------------------------- fast tier
@pytest.mark.fast
def test_the_keys_file_never_holds_a_key_and_the_cli_prints_it_last(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    created = facebridge("keys", "create", "--file", str(file), "--name", "gallery", "--scope", "translate",
                         "--scope", "verify", "--expires", "2030-01-01", "--rate", "5")  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.split()[-1]
    key_id, secret = split_key(key) or ("", "")
    assert key_id and len(secret) >= 40 and created.stdout.rstrip().endswith(key)
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    text = file.read_text()
    assert key not in text and secret not in text and "fb_" not in text
    [entry] = read_keys(file).entries
    assert (entry.id, entry.name, entry.scopes) == (key_id, "gallery", ("translate", "verify"))
    assert entry.expires == datetime(2030, 1, 1, tzinfo=UTC) and entry.limits == KeyLimits(rate_per_s=5)
    assert check_hash(key, entry.hash) and not check_hash(key + "x", entry.hash)

    listing = facebridge("keys", "list", "--file", str(file))
    assert listing.returncode == 0 and "gallery" in listing.stdout and key_id in listing.stdout
    assert "scrypt" not in listing.stdout and secret not in listing.stdout
    as_json = json.loads(facebridge("keys", "list", "--file", str(file), "--json").stdout)
    assert as_json[0]["scopes"] == ["translate", "verify"] and "hash" not in as_json[0]

    rotated = facebridge("keys", "rotate", "--file", str(file), "gallery")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.split()[-1]
    [after] = read_keys(file).entries
    assert new != key and split_key(new)[0] == key_id  # type: ignore[index]
    assert (after.id, after.scopes, after.expires) == (entry.id, entry.scopes, entry.expires)
    assert check_hash(new, after.hash) and not check_hash(key, after.hash)
    assert new not in file.read_text()

    assert facebridge("keys", "revoke", "--file", str(file), key_id).returncode == 0
    assert read_keys(file).entries[0].revoked
    assert facebridge("keys", "rotate", "--file", str(file), "gallery").returncode == 2  # revoked: no
    bad = facebridge("keys", "create", "--file", str(file), "--name", "x", "--scope", "everything")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.fast
def test_every_option_of_keys_and_audit_has_help() -> None:
    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(actions[0].choices) if actions else {}

    top = subcommands(build_parser())
    parsers = [top["audit"], *subcommands(top["keys"]).values()]
    assert len(parsers) == 5
    for parser in parsers:
        for action in parser._actions:
            if action.dest != "help":
                assert action.help, f"{parser.prog}: {action.dest} has no help text"


@pytest.mark.fast
def test_keys_file_formats_and_mistakes(tmp_path: Path) -> None:
    legacy = parse_keys("# old style\nkey-one\n\n  key-two \n")
    assert legacy.legacy and legacy.plain == ("key-one", "key-two")
    for broken, says in [
        ("{", "not valid JSON"),
        ('{"format": "other"}', "not a facebridge keys file"),
        ('{"format": "facebridge-api-keys", "version": 9, "keys": []}', "version 9"),
    ]:
        with pytest.raises(KeyFileError, match=says):
            parse_keys(broken)
    file = tmp_path / "keys.json"
    create_key(file, "a", ["admin"])
    with pytest.raises(KeyFileError, match="already named"):
        create_key(file, "a", ["admin"])
    with pytest.raises(KeyFileError, match="unknown scope"):
        create_key(file, "b", ["root"])
    document = json.loads(file.read_text())
    document["keys"][0]["scopes"] = ["superuser"]
    with pytest.raises(KeyFileError, match="unknown"):
        parse_keys(json.dumps(document))
    assert split_key("fb_0123abcd_se_cr-et") == ("0123abcd", "se_cr-et")
    assert split_key("plain-key") is None and split_key("fb_XYZ_secret") is None


@pytest.mark.fast
def test_token_bucket_and_in_flight_limit() -> None:
    limiter = KeyLimiter("3f9a1c2e")
    limiter.configure(rate=2.0, burst=2.0, max_concurrent=0)
    assert limiter.admit() is None and limiter.admit() is None
    refusal = limiter.admit()
    assert refusal is not None and refusal.outcome == "rate-limited" and refusal.retry_after == 1
    limiter.stamp -= 0.5  # half a second later: one token back
    assert limiter.admit() is None
    limiter.configure(rate=0.0, burst=0.0, max_concurrent=1)
    limiter.in_flight = 0
    assert limiter.admit() is None
    refusal = limiter.admit()
    assert refusal is not None and refusal.outcome == "concurrency-limited"
    limiter.release()
    assert limiter.admit() is None
