"""Shared fixtures: the real models from ../shared/models, real LFW photos, a real uvicorn server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.config import Settings
from app.vision.images import decode_image
from app.vision.loading import open_registry
from app.vision.pipeline import FacePipeline
from app.vision.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_MODELS = SHARED / "models"
LFW = SHARED / "datasets" / "lfw"
MODELS_DIR = ROOT / "models"
RECOGNIZERS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128", "hse-mobilenet1024"]
DETECTORS = ["yunet", "scrfd-500m"]


def _require(path: Path, what: str) -> None:
    if not path.exists():
        pytest.exit(f"{what} not found at {path}: the tests need ../shared beside the project", returncode=2)


@pytest.fixture(scope="session")
def shared_models_json() -> dict:
    _require(SHARED_MODELS / "models.json", "shared models")
    return json.loads((SHARED_MODELS / "models.json").read_text())


@pytest.fixture(scope="session")
def lfw() -> Path:
    _require(LFW / "pairs.txt", "LFW")
    return LFW


@pytest.fixture(scope="session")
def settings() -> Settings:
    missing = [p for p in MODELS_DIR.glob("*.onnx")] == []
    if missing:
        pytest.exit(
            "models/ holds no model files: run `facebridge models fetch --all --from ../shared/models`", 2
        )
    return Settings(models_dir=MODELS_DIR, providers="cpu")


@pytest.fixture(scope="session")
def registry(settings: Settings) -> ModelRegistry:
    registry = open_registry(settings, model_ids=RECOGNIZERS + DETECTORS)
    not_loaded = [m for m in RECOGNIZERS + DETECTORS if registry.status[m].state != "loaded"]
    assert not not_loaded, {m: registry.status[m].reason for m in not_loaded}
    return registry


@pytest.fixture(scope="session")
def pipeline(registry: ModelRegistry) -> FacePipeline:
    return FacePipeline(registry)


def lfw_image(lfw_root: Path, name: str, number: int) -> np.ndarray:
    path = lfw_root / name / f"{name}_{number:04d}.jpg"
    return decode_image(path.read_bytes(), max_bytes=1 << 24, max_pixels=1 << 24)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """`facebridge serve` in a child process on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, **env, "FACEBRIDGE_LOG_LEVEL": "warning"}
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout}s: {self.log_path.read_text()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


@pytest.fixture(scope="session")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_PROVIDERS": "cpu",
            "FACEBRIDGE_MAX_IMAGES_PER_REQUEST": "4",
            "FACEBRIDGE_MAX_IMAGE_BYTES": "2000000",
            "FACEBRIDGE_MAX_IMAGE_PIXELS": "4000000",
        },
        tmp_path_factory.mktemp("server") / "server.log",
    )
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as http:
        yield http
