"""Faults against a real server: bad map files refused while the rest serves, atomic reload (endpoint
and SIGHUP), bad model files shown as unavailable, graceful shutdown finishing in-flight requests."""

from __future__ import annotations

import base64
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from .conftest import MODELS_DIR, ROOT, LiveServer

KEY = {"X-API-Key": "fault-key"}
FIRST = "arcface-mbf128__sirius-mbf192.safetensors"
SECOND = "sirius-mbf192__arcface-mbf128.safetensors"


def _start(tmp_path: Path, **env: str) -> LiveServer:
    live = LiveServer(
        {"FACEBRIDGE_MODELS_DIR": str(MODELS_DIR), "FACEBRIDGE_API_KEYS": "fault-key", **env},
        tmp_path / "server.log",
    )
    live.wait_ready()
    return live


def _maps(live: LiveServer) -> tuple[list[str], list[str]]:
    body = httpx.get(live.url + "/mappings", headers=KEY).json()
    return sorted(m["id"] for m in body["maps"]), sorted(r["file"] for r in body["refused"])


def test_reload_swaps_the_map_set_atomically_and_refuses_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    shutil.copy(ROOT / "mappings" / FIRST, folder / FIRST)
    live = _start(tmp_path, FACEBRIDGE_MAPPINGS_DIR=str(folder), FACEBRIDGE_LOAD_MODELS="[]")
    try:
        assert _maps(live) == (["arcface-mbf128->sirius-mbf192"], [])
        rows = [[1.0] + [0.0] * 127]
        answers: list[int] = []
        stop = threading.Event()

        def translate_continuously() -> None:
            with httpx.Client(base_url=live.url, headers=KEY) as http:
                while not stop.is_set():
                    body = {"source": "arcface-mbf128", "target": "sirius-mbf192", "embeddings": rows}
                    answers.append(http.post("/translate", json=body).status_code)

        worker = threading.Thread(target=translate_continuously)
        worker.start()
        try:
            shutil.copy(ROOT / "mappings" / SECOND, folder / SECOND)
            truncated = (ROOT / "mappings" / FIRST).read_bytes()[:5000]
            (folder / "dlib-r29-128__arcface-mbf128.safetensors").write_bytes(truncated)
            for _ in range(10):
                reloaded = httpx.post(live.url + "/admin/reload-mappings", headers=KEY)
                assert reloaded.status_code == 200, reloaded.text
        finally:
            stop.set()
            worker.join()
        assert answers and set(answers) == {200}, set(answers)  # no request saw a half-loaded set
        assert _maps(live) == (
            ["arcface-mbf128->sirius-mbf192", "sirius-mbf192->arcface-mbf128"],
            ["dlib-r29-128__arcface-mbf128.safetensors"],
        )
        assert "dlib-r29-128__arcface-mbf128.safetensors" in live.log()

        (folder / SECOND).unlink()
        live.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _maps(live)[0] != ["arcface-mbf128->sirius-mbf192"]:
            assert time.monotonic() < deadline, "SIGHUP did not reload the mappings"
            time.sleep(0.2)
        assert httpx.post(live.url + "/admin/reload-mappings").status_code == 401
    finally:
        live.stop()


def test_corrupt_and_mismatched_model_files_are_unavailable_while_others_serve(
    tmp_path: Path, lfw: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(MODELS_DIR / "manifest.toml", models / "manifest.toml")
    for name in ("face_detection_yunet_2023mar.onnx", "dlib_resnet29_faceapi_128.onnx"):
        shutil.copy(MODELS_DIR / name, models / name)
    arcface, sirius = "insightface_mobilefacenet_y1_arcface_128.onnx", "mobilefacenet_sirius_tf_192.onnx"
    (models / arcface).write_bytes((MODELS_DIR / arcface).read_bytes()[:20000])  # truncated
    blob = bytearray((MODELS_DIR / sirius).read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte: the sha256 no longer matches the manifest
    (models / sirius).write_bytes(bytes(blob))
    live = _start(tmp_path, FACEBRIDGE_MODELS_DIR=str(models))
    try:
        states = {m["id"]: m for m in httpx.get(live.url + "/models", headers=KEY).json()["models"]}
        for broken in ("arcface-mbf128", "sirius-mbf192"):
            assert states[broken]["state"] == "refused", states[broken]
            assert "sha256" in states[broken]["reason"]
        assert states["dlib-r29-128"]["state"] == "loaded"
        assert "arcface-mbf128" in live.log()
        photo = base64.b64encode((lfw / "Aaron_Peirsol/Aaron_Peirsol_0001.jpg").read_bytes()).decode()
        for model, status in (("dlib-r29-128", 200), ("arcface-mbf128", 409), ("sirius-mbf192", 409)):
            answer = httpx.post(
                live.url + "/embed",
                headers=KEY,
                json={"image": {"data": photo}, "models": [model]},
                timeout=60,
            )
            assert answer.status_code == status, answer.text
        # maps keep serving even though the recognizers behind them are refused: no ONNX file is needed
        rows = [[1.0] + [0.0] * 127]
        body = {"source": "arcface-mbf128", "target": "sirius-mbf192", "embeddings": rows}
        assert httpx.post(live.url + "/translate", headers=KEY, json=body).status_code == 200
    finally:
        live.stop()


def test_graceful_shutdown_finishes_in_flight_requests(tmp_path: Path) -> None:
    live = _start(tmp_path, FACEBRIDGE_LOAD_MODELS="[]")
    try:
        rows = ",".join(["[" + ",".join(["0.1"] * 128) + "]"] * 1000)
        head = '{"source": "arcface-mbf128", "target": "sirius-mbf192", "embeddings": ['
        sent_head = threading.Event()

        def slow_body() -> Iterator[bytes]:
            yield head.encode()
            sent_head.set()
            time.sleep(1.5)  # SIGTERM arrives while the request is half received
            yield (rows + "]}").encode()

        result: dict[str, object] = {}

        def slow_request() -> None:
            response = httpx.post(
                live.url + "/translate",
                content=slow_body(),
                headers={**KEY, "content-type": "application/json"},
                timeout=60,
            )
            result["status"] = response.status_code
            result["rows"] = len(response.json()["embeddings"])

        thread = threading.Thread(target=slow_request)
        thread.start()
        assert sent_head.wait(10)
        time.sleep(0.3)
        live.process.send_signal(signal.SIGTERM)
        thread.join(60)
        assert result == {"status": 200, "rows": 1000}
        # uvicorn re-raises SIGTERM once it has drained, so the exit is by that signal, not a crash
        assert live.process.wait(30) in (0, -signal.SIGTERM)
    finally:
        if live.process.poll() is None:
            live.stop()
        else:
            live._log.close()
