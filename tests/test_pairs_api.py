"""/pairs and `record` on /embed: the contract in-process (fast tier), then real `facebridge serve`
processes on a SQLite file and on a PostgreSQL server: concurrent writers lose no row, a SIGKILLed
server loses no acknowledged row, erasure removes a subject everywhere, and the photo is never stored."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from facebridge.client import Client
from facebridge.config import Settings
from facebridge.pairs import PairStore, SchemaTooNew
from facebridge.pairs.migrations import latest_version
from facebridge.paths import shipped_manifest
from facebridge.service.app import create_app
from facebridge.vision.manifest import load_manifest

from .conftest import API_KEYS, LFW, MODELS_DIR, LiveServer
from .factories import service_settings
from .pair_targets import EXPECTED_COLUMNS, Target, make_target, schema_of

A, B, C = "arcface-mbf128", "sirius-mbf192", "faceplugin-mbf512"
DIMS = {A: 128, B: 192, C: 512}
PINS = {m.id: m.sha256 for m in load_manifest(shipped_manifest()).models}
PHOTO = LFW / "Colin_Powell" / "Colin_Powell_0010.jpg"


def template(model: str, seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(size=DIMS[model]).astype(np.float32).tolist()


def pair(subject: str, model_a: str, model_b: str, seed: int) -> dict[str, Any]:
    return {
        "subject": subject,
        "a": {"model": model_a, "embedding": template(model_a, seed)},
        "b": {"model": model_b, "embedding": template(model_b, seed + 1)},
    }


def assert_problem(response: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == f"urn:facebridge:problem:{code}", body
    if field is not None:
        assert [e["field"] for e in body["errors"]] == [field], body


# ---------------------------------------------------------------------------------------------- fast tier
@pytest.fixture
def app_without_store(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(service_settings(tmp_path))) as client:
        assert client.app.state.service.ready.wait(30)  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def app_with_store(tmp_path: Path) -> Iterator[TestClient]:
    settings = service_settings(tmp_path, pairs_db=tmp_path / "pairs.db", max_pairs_per_request=5)
    with TestClient(create_app(settings)) as client:
        assert client.app.state.service.ready.wait(30)  # type: ignore[attr-defined]
        yield client


@pytest.mark.fast
def test_everything_is_off_without_a_store(app_without_store: TestClient) -> None:
    http = app_without_store
    assert_problem(http.post("/pairs", json={"pairs": [pair("s", A, B, 0)]}), 404, "pairs-disabled")
    assert_problem(http.delete("/pairs", params={"subject": "s"}), 404, "pairs-disabled")
    assert_problem(http.get("/pairs/stats"), 404, "pairs-disabled")
    body = {"image": {"data": "AAAA"}, "models": [A, B], "largest_only": True, "record": {"subject": "s"}}
    assert_problem(http.post("/embed", json=body), 404, "pairs-disabled")


@pytest.mark.fast
def test_pairs_are_recorded_with_the_manifest_pins(app_with_store: TestClient, tmp_path: Path) -> None:
    http = app_with_store
    answer = http.post("/pairs", json={"pairs": [pair("s0", A, B, 0), pair("s1", B, A, 2)]})
    assert answer.status_code == 201 and answer.json() == {"recorded": 2}
    store = PairStore.open(tmp_path / "pairs.db")
    stored = store.read(A, B)
    store.close()
    assert stored.subjects.tolist() == ["s0", "s1"] and stored.hashes == {(PINS[A], PINS[B])}
    np.testing.assert_array_equal(stored.source[0], np.asarray(template(A, 0), np.float32))
    np.testing.assert_array_equal(
        stored.source[1], np.asarray(template(A, 3), np.float32)
    )  # s1 was recorded B->A
    stats = http.get("/pairs/stats").json()
    assert stats["backend"] == "sqlite" and stats["schema_version"] == latest_version()
    assert stats["retention_days"] == 180 and stats["max_rows_per_pair"] == 1_000_000
    [entry] = stats["model_pairs"]
    assert (entry["source_model"], entry["target_model"], entry["pairs"], entry["subjects"]) == (A, B, 2, 2)
    assert http.delete("/pairs", params={"subject": "s1"}).json() == {"deleted": 1}
    assert http.get("/pairs/stats").json()["model_pairs"][0]["pairs"] == 1


@pytest.mark.fast
def test_bad_pairs_are_refused_with_the_field_and_nothing_is_stored(app_with_store: TestClient) -> None:
    http = app_with_store

    def post(*pairs: dict[str, Any]) -> httpx.Response:
        return http.post("/pairs", json={"pairs": list(pairs)})

    good = pair("ok", A, B, 0)
    unknown = {**good, "b": {"model": "no-such-model", "embedding": [0.1] * 8}}
    assert_problem(post(good, unknown), 404, "unknown-model", "pairs[1].b.model")
    short = {**good, "a": {"model": A, "embedding": [0.1] * 127}}
    assert_problem(post(good, short), 422, "wrong-dim", "pairs[1].a.embedding")
    assert_problem(post(pair("x", A, A, 0)), 422, "same-space", "pairs[0].b.model")
    detector = {**good, "b": {"model": "yunet", "embedding": [0.1] * 4}}
    assert_problem(post(detector), 409, "model-unavailable", "pairs[0].b.model")
    nan = json.dumps({"pairs": [{**good, "a": {"model": A, "embedding": [float("nan")] + [0.1] * 127}}]})
    response = http.post("/pairs", content=nan, headers={"content-type": "application/json"})
    assert_problem(response, 422, "non-finite", "pairs[0].a.embedding")
    zero = {**good, "b": {"model": B, "embedding": [0.0] * 192}}
    assert_problem(post(zero), 422, "zero-vector", "pairs[0].b.embedding")
    assert_problem(post({**good, "subject": "John Smith"}), 422, "validation-error", "pairs[0].subject")
    assert_problem(post(), 422, "validation-error", "pairs")
    assert_problem(post(*[good] * 6), 413, "batch-too-large", "pairs")
    erase = http.delete("/pairs", params={"subject": "two words"})
    assert_problem(erase, 422, "validation-error", "query.subject")
    assert http.get("/pairs/stats").json()["model_pairs"] == []


@pytest.mark.fast
def test_record_option_needs_two_models_and_one_face(app_with_store: TestClient) -> None:
    http = app_with_store
    base = {"image": {"data": "AAAA"}, "models": [A, B], "largest_only": True, "record": {"subject": "s"}}
    for change in ({"models": [A]}, {"models": [A, A]}, {"largest_only": False}, {"mode": "full-network"}):
        assert_problem(http.post("/embed", json={**base, **change}), 422, "validation-error", "record")
    form = {"models": A, "largest_only": "true", "record_subject": "s"}
    response = http.post("/embed", data=form, files={"images": ("p.jpg", b"x", "image/jpeg")})
    assert_problem(response, 422, "validation-error", "record")
    bad_subject = {**base, "record": {"subject": "a name"}}
    assert_problem(http.post("/embed", json=bad_subject), 422, "validation-error", "record.subject")
    # well-formed, but the recognizers are not installed here: refused before anything is stored
    assert_problem(http.post("/embed", json=base), 409, "model-unavailable", "models[0]")
    assert http.get("/pairs/stats").json()["model_pairs"] == []


@pytest.mark.fast
def test_a_failing_store_answers_503_and_logs_no_subject(
    app_with_store: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = app_with_store.app.state.service.pairs  # type: ignore[attr-defined]

    def broken(*_: object) -> int:
        raise RuntimeError("violates check constraint\nDETAIL:  Failing row contains (secret-subject-42).")

    monkeypatch.setattr(store, "record", broken)
    monkeypatch.setattr(store, "erase", broken)
    answer = app_with_store.post("/pairs", json={"pairs": [pair("secret-subject-42", A, B, 0)]})
    assert_problem(answer, 503, "pairs-unavailable")
    assert_problem(
        app_with_store.delete("/pairs", params={"subject": "secret-subject-42"}), 503, "pairs-unavailable"
    )
    assert "violates check constraint" in caplog.text and "secret-subject-42" not in caplog.text


@pytest.mark.fast
def test_a_store_newer_than_the_code_stops_the_service_at_start(tmp_path: Path) -> None:
    PairStore.open(tmp_path / "pairs.db").close()
    with sqlite3.connect(tmp_path / "pairs.db") as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'future', '2099-01-01T00:00:00.000000Z')")
    conn.close()
    with (
        pytest.raises(SchemaTooNew, match="schema version 99"),
        TestClient(create_app(service_settings(tmp_path, pairs_db=tmp_path / "pairs.db"))),
    ):
        pass


@pytest.mark.fast
def test_openapi_declares_the_pair_bodies(app_with_store: TestClient) -> None:
    document = app_with_store.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    body = document["paths"]["/pairs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert (
        body["$ref"].rsplit("/", 1)[1] == "PairsRequest" and "pairs" in schemas["PairsRequest"]["properties"]
    )
    assert {"delete", "post"} <= set(document["paths"]["/pairs"]) and "/pairs/stats" in document["paths"]
    embed = document["paths"]["/embed"]["post"]["requestBody"]["content"]
    assert "record" in schemas["EmbedJsonRequest"]["properties"]
    assert "record_subject" in embed["multipart/form-data"]["schema"]["properties"]


# ---------------------------------------------------------------------------------------------- real servers
def server_env(target: Target, models: list[str]) -> dict[str, str]:
    return {
        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
        "FACEBRIDGE_PROVIDERS": "cpu",
        "FACEBRIDGE_LOAD_MODELS": json.dumps(models),
        "FACEBRIDGE_API_KEYS": API_KEYS[0],
        **target.env(),
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def recording(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Target]]:
    """A real server recording into a fresh store, with the two recognizers and YuNet loaded."""
    directory = tmp_path_factory.mktemp(f"pairs-{request.param}")
    target = make_target(request.param, request, directory)
    live = LiveServer(server_env(target, [A, B, "yunet"]), directory / "server.log")
    try:
        live.wait_ready()
        yield live, target
    finally:
        live.stop()


def client_of(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=60.0, headers={"X-API-Key": API_KEYS[0]})


def recorded_total(http: httpx.Client, route: str) -> float:
    text = http.get("/metrics").text
    line = r"^facebridge_pairs_recorded_total\{route=\"" + re.escape(route) + r"\"\} (\S+)$"
    found = re.search(line, text, re.M)
    return float(found[1]) if found else 0.0


def test_concurrent_requests_lose_no_row(recording: tuple[LiveServer, Target]) -> None:
    live, target = recording
    with client_of(live) as http:
        before = recorded_total(http, "/pairs")
    failures: list[str] = []

    def sender(thread: int) -> None:
        with client_of(live) as http:
            for i in range(50):
                seed = 1000 * thread + 2 * i
                body = {"pairs": [pair(f"c{thread}-{i}-x", A, B, seed), pair(f"c{thread}-{i}-y", B, A, seed)]}
                answer = http.post("/pairs", json=body)
                if answer.status_code != 201 or answer.json() != {"recorded": 2}:
                    failures.append(answer.text)

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    store = target.open()
    stored = store.read(A, B)
    store.close()
    rows = {s: i for i, s in enumerate(stored.subjects.tolist()) if s.startswith("c")}
    expected = {f"c{t}-{i}-{side}" for t in range(8) for i in range(50) for side in "xy"}
    assert len(rows) == len(expected) == 800 and set(rows) == expected
    assert sum(s.startswith("c") for s in stored.subjects.tolist()) == 800  # no duplicate either
    for thread, i in [(0, 0), (3, 17), (7, 49)]:
        seed = 1000 * thread + 2 * i
        np.testing.assert_array_equal(
            stored.source[rows[f"c{thread}-{i}-x"]], np.asarray(template(A, seed), np.float32)
        )
        np.testing.assert_array_equal(
            stored.source[rows[f"c{thread}-{i}-y"]], np.asarray(template(A, seed + 1), np.float32)
        )
    with client_of(live) as http:
        assert recorded_total(http, "/pairs") - before == 800


def test_erasure_removes_a_subject_everywhere(recording: tuple[LiveServer, Target]) -> None:
    live, target = recording
    with client_of(live) as http:
        pairs = [pair("erase-me", A, B, 1), pair("erase-me", B, A, 2), pair("erase-me", A, C, 3)]
        assert http.post("/pairs", json={"pairs": [*pairs, pair("keep-me", A, B, 4)]}).status_code == 201
        before = {
            (e["source_model"], e["target_model"]): e for e in http.get("/pairs/stats").json()["model_pairs"]
        }
        assert before[(A, C)]["pairs"] >= 1
        assert http.delete("/pairs", params={"subject": "erase-me"}).json() == {"deleted": 3}
        assert http.delete("/pairs", params={"subject": "erase-me"}).json() == {"deleted": 0}
        after = {
            (e["source_model"], e["target_model"]): e for e in http.get("/pairs/stats").json()["model_pairs"]
        }
    assert after[(A, B)]["pairs"] == before[(A, B)]["pairs"] - 2
    assert after[(A, B)]["subjects"] == before[(A, B)]["subjects"] - 1
    assert (A, C) not in after or after[(A, C)]["pairs"] == before[(A, C)]["pairs"] - 1
    store = target.open()
    for source, destination in [(A, B), (B, A), (A, C), (C, A)]:
        subjects = store.read(source, destination).subjects.tolist()
        assert "erase-me" not in subjects
    assert "keep-me" in store.read(B, A).subjects.tolist()
    store.close()


def _windows(data: bytes, size: int, count: int = 24) -> list[bytes]:
    """Slices spread over the data, past the first 1 KiB (JPEG headers and tables are generic)."""
    start = min(1024, len(data) // 4)
    step = max((len(data) - start - size) // count, 1)
    return [data[start + i * step : start + i * step + size] for i in range(count)]


def test_the_photo_is_never_stored(recording: tuple[LiveServer, Target]) -> None:
    live, target = recording
    photo = PHOTO.read_bytes()
    encoded = base64.b64encode(photo)
    with client_of(live) as http:
        as_json = {"image": {"data": encoded.decode()}, "models": [A, B], "largest_only": True,
                   "record": {"subject": "photo-json"}}  # fmt: skip
        answers = [http.post("/embed", json=as_json)]
        form = {"models": f"{A},{B}", "largest_only": "true", "record_subject": "photo-form"}
        answers.append(http.post("/embed", data=form, files={"images": ("p.jpg", photo, "image/jpeg")}))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["Facebridge-Pairs-Recorded"] == "1"
    store = target.open()
    stored = store.read(A, B)
    store.close()
    for subject, answer in zip(["photo-json", "photo-form"], answers, strict=True):
        [index] = np.flatnonzero(stored.subjects == subject)
        served = {e["model"]: e for e in answer.json()["results"][0]["faces"][0]["embeddings"]}
        np.testing.assert_array_equal(stored.source[index], np.asarray(served[A]["embedding"], np.float32))
        np.testing.assert_array_equal(stored.target[index], np.asarray(served[B]["embedding"], np.float32))
        assert (stored.source_sha256[index], stored.target_sha256[index]) == (PINS[A], PINS[B])
        assert served[A]["sha256"] == PINS[A] and served[B]["sha256"] == PINS[B]

    # the schema: two tables, the expected columns, and values no bigger than two templates
    tables, columns = schema_of(target)
    blob = "blob" if target.kind == "sqlite" else "bytea"
    assert [c for c, t in columns if t == blob] == ["source_embedding", "target_embedding"]
    if target.kind == "sqlite":
        types = target.execute(
            "SELECT DISTINCT typeof(subject), typeof(source_embedding), typeof(target_embedding), "
            "typeof(created_at) FROM pairs"
        )
        assert types == [("text", "blob", "blob", "text")]
        text = "MAX(length(CAST(subject || source_model || target_model AS BLOB)))"
    else:
        assert [t for c, t in columns if c.endswith(("subject", "model", "sha256"))] == ["text"] * 5
        text = "MAX(octet_length(subject || source_model || target_model))"
    largest = target.execute(f"SELECT {text} FROM pairs")[0][0]
    assert sorted(tables) == ["audit_log", "pairs", "schema_version"]
    assert [c for c, _ in columns] == EXPECTED_COLUMNS
    sizes = target.execute(
        "SELECT length(source_embedding), length(target_embedding), length(source_sha256), "
        "length(target_sha256) FROM pairs WHERE subject IN ('photo-json', 'photo-form')"
    )
    assert sizes == [(DIMS[A] * 4, DIMS[B] * 4, 64, 64)] * 2
    biggest = target.execute(
        "SELECT MAX(length(source_embedding)), MAX(length(target_embedding)) FROM pairs"
    )[0]
    assert max(biggest) <= 4 * max(DIMS.values()) < len(photo) // 2 and largest < 200

    # the bytes on disk: the template is there (the scan works), no piece of the photo is
    files = target.files()
    blobs = [path.read_bytes() for path in files]
    template_bytes = stored.source[np.flatnonzero(stored.subjects == "photo-form")[0]].astype("<f4").tobytes()
    assert any(template_bytes in blob for blob in blobs), (
        "positive control: the stored template must be found"
    )
    for needle in _windows(photo, 48) + _windows(encoded, 64):
        assert not any(needle in blob for blob in blobs), (
            f"photo bytes found in the store's files: {needle[:16]!r}"
        )


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-normal", "postgresql"])
def test_a_killed_server_loses_no_acknowledged_row(
    kind: str, request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> None:
    target = make_target(kind, request, tmp_path)
    live = LiveServer(server_env(target, []), tmp_path / "server.log")  # no model needed for /pairs
    acknowledged: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    try:
        live.wait_ready()

        def sender(thread: int) -> None:
            with client_of(live) as http:
                for i in range(100_000):
                    subject = f"k{thread}-{i}"
                    try:
                        answer = http.post("/pairs", json={"pairs": [pair(subject, A, B, i)]}, timeout=10)
                    except httpx.TransportError as error:
                        errors.append(type(error).__name__)
                        return
                    assert answer.status_code == 201, answer.text
                    with lock:
                        acknowledged.append(subject)

        threads = [threading.Thread(target=sender, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(live.process.pid, signal.SIGKILL)  # mid-stream: requests are in flight
        killed_after = len(acknowledged)
        for t in threads:
            t.join(30)
        assert live.process.wait(10) == -signal.SIGKILL
    finally:
        live.stop()
    assert killed_after >= 300 and len(errors) == 6  # every sender saw the connection die
    store = target.open()  # reopening recovers the SQLite WAL / reconnects to PostgreSQL
    stored = set(store.read(A, B).subjects.tolist())
    store.close()
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged row(s) lost, e.g. {sorted(missing)[:5]}"
    assert len(stored) >= len(acknowledged)  # a commit whose answer never left may be there too


def test_the_client_records_counts_and_erases_pairs(recording: tuple[LiveServer, Target], lfw: Path) -> None:
    """facebridge.client: record_pairs, embed(record_subject=...), pair_stats and erase_subject."""
    live, target = recording
    rng = np.random.default_rng(7)
    with Client(live.url, API_KEYS[0]) as client:
        answer = client.record_pairs(
            [("client-subject", (A, rng.normal(size=128)), (B, rng.normal(size=192))) for _ in range(3)]
        )
        assert answer.recorded == 3
        photo = lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
        embedded = client.embed(photo, [A, B], largest_only=True, record_subject="client-subject")
        assert len(embedded.results[0].faces) == 1
        counts = {(e.source_model, e.target_model): e for e in client.pair_stats().model_pairs}
        assert counts[(A, B) if A < B else (B, A)].pairs >= 4
        assert client.erase_subject("client-subject").deleted == 4
    store = target.open()
    assert "client-subject" not in store.read(A, B).subjects.tolist()
    store.close()
