"""Request limits and structured logs against a real server: 413 (declared and streamed bodies), 429
(requests in flight), 503 (time budget), and JSON log lines that carry the request id but no data."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import MODELS_DIR, LiveServer

KEY = "limits-key"
HEADERS = {"X-API-Key": KEY}


def _serve(tmp_path: Path, **env: str) -> LiveServer:
    live = LiveServer(
        {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_LOAD_MODELS": "[]",
            "FACEBRIDGE_API_KEYS": KEY,
            **env,
        },
        tmp_path / "server.log",
    )
    live.wait_ready()
    return live


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[LiveServer]:
    live = _serve(
        tmp_path,
        FACEBRIDGE_MAX_REQUEST_BYTES="100000",
        FACEBRIDGE_MAX_IN_FLIGHT="1",
        FACEBRIDGE_LOG_FORMAT="json",
        FACEBRIDGE_LOG_LEVEL="info",
    )
    yield live
    live.stop()


def _problem(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == f"urn:facebridge:problem:{kind}" and body["status"] == status
    return body


def test_bodies_over_the_limit_are_refused_declared_or_streamed(limited: LiveServer) -> None:
    big = b"[" + b"0.5," * 40_000 + b"0.5]"
    _problem(httpx.post(limited.url + "/verify", content=big, headers=HEADERS), 413, "request-too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b" " * 5000

    _problem(
        httpx.post(limited.url + "/translate", content=chunks(), headers=HEADERS), 413, "request-too-large"
    )


def test_requests_over_the_in_flight_limit_get_429(limited: LiveServer) -> None:
    def slow_body() -> Iterator[bytes]:
        yield b'{"pairs": '
        time.sleep(1.5)
        yield b"[]}"

    first: dict[str, int] = {}
    thread = threading.Thread(
        target=lambda: first.update(
            status=httpx.post(
                limited.url + "/verify", content=slow_body(), headers=HEADERS, timeout=30
            ).status_code
        )
    )
    thread.start()
    time.sleep(0.5)
    second = httpx.get(limited.url + "/mappings", headers=HEADERS)
    body = _problem(second, 429, "too-many-requests")
    assert second.headers["retry-after"] == "1" and "limit is 1" in body["detail"]
    assert httpx.get(limited.url + "/healthz").status_code == 200  # probes are never limited
    thread.join()
    assert first["status"] == 422  # the slow request itself was served (empty batch)


def test_json_logs_carry_the_request_id_and_no_data(limited: LiveServer) -> None:
    marker = 0.123456789
    row = [marker] + [0.0] * 127
    body = {"source": "arcface-mbf128", "target": "sirius-mbf192", "embeddings": [row]}
    answer = httpx.post(limited.url + "/translate", json=body, headers={**HEADERS, "X-Request-ID": "req-42"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "req-42"
    generated = httpx.get(limited.url + "/mappings", headers=HEADERS).headers["x-request-id"]
    assert len(generated) == 32
    time.sleep(0.2)
    lines = [json.loads(line) for line in limited.log().splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry["logger"] == "facebridge.access"]
    mine = [entry for entry in access if entry["request_id"] == "req-42"]
    assert mine and mine[0]["route"] == "/translate" and mine[0]["status"] == 200, limited.log()[-3000:]
    assert any(entry["request_id"] == generated for entry in access)
    text = limited.log()
    assert str(marker)[:8] not in text and KEY not in text


def test_time_budget_answers_503(tmp_path: Path) -> None:
    live = _serve(tmp_path, FACEBRIDGE_REQUEST_TIME_BUDGET_S="0.001")
    try:
        rows = [[0.1] * 128] * 5000
        body = {"source": "arcface-mbf128", "target": "sirius-mbf192", "embeddings": rows}
        answer = httpx.post(live.url + "/translate", json=body, headers=HEADERS, timeout=60)
        _problem(answer, 503, "time-budget-exceeded")
        assert httpx.get(live.url + "/readyz").status_code == 200
    finally:
        live.stop()
