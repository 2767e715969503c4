"""GET /metrics on a real server: requests, latencies, batches, inference time, maps and errors."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest

from .conftest import API_KEYS, MODELS_DIR, LiveServer


def _value(text: str, name: str, **labels: str) -> float:
    """The sample of `name` whose labels include `labels` (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_what_happened(client: httpx.Client, server: LiveServer, lfw: Path) -> None:
    before = httpx.get(server.url + "/metrics").text  # open by default, no key
    dim = client.get("/mappings").json()["maps"][0]["metadata"]
    source, target = dim["source"]["model"], dim["target"]["model"]
    rows = [[1.0] + [0.0] * (dim["source"]["dim"] - 1)] * 3
    assert (
        client.post("/translate", json={"source": source, "target": target, "embeddings": rows}).status_code
        == 200
    )
    photo = base64.b64encode((lfw / "Aaron_Peirsol/Aaron_Peirsol_0001.jpg").read_bytes()).decode()
    assert (
        client.post("/embed", json={"image": {"data": photo}, "models": ["arcface-mbf128"]}).status_code
        == 200
    )
    assert httpx.get(server.url + "/mappings").status_code == 401

    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text
    route = {"route": "/translate", "method": "POST", "status": "200"}
    assert (
        _value(after, "facebridge_requests_total", **route)
        == _value(before, "facebridge_requests_total", **route) + 1
    )
    assert _value(after, "facebridge_request_duration_seconds_count", route="/translate") >= 1
    assert _value(after, "facebridge_batch_size_count", route="/translate") >= 1
    assert _value(after, "facebridge_batch_size_sum", route="/translate") >= 3
    assert _value(after, "facebridge_inference_seconds_count", model="arcface-mbf128") >= 1
    assert _value(after, "facebridge_errors_total", type="unauthorized") >= 1
    assert _value(after, "facebridge_maps_loaded") == len(client.get("/mappings").json()["maps"])
    assert _value(after, "facebridge_models_loaded") >= 5
    assert "Aaron" not in after and API_KEYS[0] not in after


@pytest.mark.parametrize("public", ["false"])
def test_metrics_can_require_a_key(tmp_path: Path, public: str) -> None:
    live = LiveServer(
        {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_LOAD_MODELS": "[]",
            "FACEBRIDGE_API_KEYS": "metrics-key",
            "FACEBRIDGE_METRICS_PUBLIC": public,
        },
        tmp_path / "server.log",
    )
    try:
        live.wait_ready()
        assert httpx.get(live.url + "/metrics").status_code == 401
        assert httpx.get(live.url + "/metrics", headers={"X-API-Key": "metrics-key"}).status_code == 200
    finally:
        live.stop()
