"""The CPU image, built and started with compose, answers like the library run outside the container.

Builds the Dockerfile (`docker build --network host`), starts the `facebridge` compose service on a
free loopback port with ./models and ./mappings mounted, waits for readiness, calls /embed on real
LFW photos, /translate and /verify with the shipped maps, then runs the stack's identity system
(PostgreSQL + the service + examples/identity_system.py: enrol, migrate in place, swap, authenticate),
and tears everything down. Skipped only where no Docker engine answers; with FACEBRIDGE_REQUIRE_DOCKER=1
(as CI sets) a missing engine is a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from facebridge.mapping.bank import MappingBank
from facebridge.vision.images import decode_image
from facebridge.vision.manifest import load_manifest
from facebridge.vision.pipeline import DetectionOptions, FacePipeline

from .conftest import MODELS_DIR, ROOT, free_port

IMAGE_TAG = "test"
DOCKER_KEY = "docker-test-key-7f3a"
PROJECT = "facebridge-test"
SOURCE, TARGET = "arcface-mbf128", "sirius-mbf192"
ENROL, PROBE, OTHER = (
    "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
    "Abdullah_Gul/Abdullah_Gul_0001.jpg",
)


def _docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _compose() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("a Docker engine answers but neither docker-compose nor the compose plugin is installed")


def _ensure_postgres_image() -> None:
    """The stack's `postgres:15`: pulled where a registry answers, else the local stand-in is built."""
    if subprocess.run(["docker", "image", "inspect", "postgres:15"], capture_output=True).returncode == 0:
        return
    if subprocess.run(["docker", "pull", "postgres:15"], capture_output=True, timeout=300).returncode == 0:
        return
    script = ROOT.parent / "shared" / "docker" / "local-postgres-image.sh"
    if not script.exists():
        pytest.fail(
            "no postgres:15 image: `docker pull postgres:15` failed and there is no local stand-in script"
        )
    _run(["bash", str(script)])


def _run(command: list[str], env: dict[str, str] | None = None, timeout: float = 1500) -> str:
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def container(lfw: Path) -> Iterator[tuple[str, dict[str, str]]]:
    if not _docker_ready():
        if os.environ.get("FACEBRIDGE_REQUIRE_DOCKER") == "1":
            pytest.fail("FACEBRIDGE_REQUIRE_DOCKER=1 but no Docker engine answers `docker info`")
        pytest.skip("no Docker engine: run ../shared/docker/local-python-base.sh (or install Docker)")
    _run(["docker", "build", "--network", "host", "-t", f"facebridge:{IMAGE_TAG}", "."])
    _ensure_postgres_image()
    port = free_port()
    env = {
        **os.environ,
        "FACEBRIDGE_TAG": IMAGE_TAG,
        "FACEBRIDGE_PORT": str(port),
        "LFW_DIR": str(lfw),
        "POSTGRES_PORT": str(free_port()),
        "POSTGRES_PASSWORD": "compose-test-password",
        "FACEBRIDGE_API_KEYS": f"{DOCKER_KEY},old-key-being-rotated-out",
        "FACEBRIDGE_CLIENT_KEY": DOCKER_KEY,
    }
    compose = [*_compose(), "-p", PROJECT]
    try:
        _run([*compose, "up", "-d", "--no-build", "facebridge"], env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                logs = _run([*compose, "logs", "facebridge"], env)
                raise AssertionError(f"container not ready in 180 s:\n{logs}")
            time.sleep(1)
        yield url, env
    finally:
        subprocess.run(
            [*compose, "down", "--remove-orphans", "--volumes"], cwd=ROOT, env=env, capture_output=True
        )


def _photo(lfw: Path, path: str) -> str:
    return base64.b64encode((lfw / path).read_bytes()).decode()


def _bgr(lfw: Path, path: str) -> np.ndarray:
    return decode_image((lfw / path).read_bytes(), max_bytes=1 << 24, max_pixels=1 << 24)


def test_container_runs_unprivileged_and_turns_healthy(container: tuple[str, dict[str, str]]) -> None:
    _, env = container
    ids = _run([*_compose(), "-p", PROJECT, "ps", "-q", "facebridge"], env).split()
    assert ids, "no facebridge container"
    deadline = time.monotonic() + 90
    while (
        status := _run(["docker", "inspect", "-f", "{{.State.Health.Status}}", ids[0]]).strip()
    ) != "healthy":
        assert status in ("starting", "healthy"), status
        assert time.monotonic() < deadline, "HEALTHCHECK never reported healthy"
        time.sleep(2)
    assert _run(["docker", "exec", ids[0], "id", "-u"]).strip() == "10001"
    logs = _run([*_compose(), "-p", PROJECT, "logs", "facebridge"], env)
    assert "CPUExecutionProvider" in logs  # the providers really obtained are logged at start-up


def test_embed_translate_verify_match_the_library(
    container: tuple[str, dict[str, str]], lfw: Path, pipeline: FacePipeline
) -> None:
    url, _ = container
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": DOCKER_KEY}) as http:
        answer = http.post(
            "/embed",
            json={"image": {"data": _photo(lfw, ENROL)}, "models": [SOURCE, TARGET], "largest_only": True},
        )
        assert answer.status_code == 200, answer.text
        served = {
            e["model"]: np.array(e["embedding"])
            for e in answer.json()["results"][0]["faces"][0]["embeddings"]
        }

        local = {
            e.model_id: e.vector
            for e in pipeline.embed_image(_bgr(lfw, ENROL), [SOURCE, TARGET], DetectionOptions())[
                0
            ].embeddings
        }
        for model in (SOURCE, TARGET):
            assert float(served[model] @ local[model]) > 0.9999, model

        bank = MappingBank.load(ROOT / "mappings", load_manifest(MODELS_DIR / "manifest.toml"))
        translated = http.post(
            "/translate", json={"source": SOURCE, "target": TARGET, "embeddings": [served[SOURCE].tolist()]}
        )
        assert translated.status_code == 200, translated.text
        expected = bank.maps[(SOURCE, TARGET)].apply(served[SOURCE][None].astype(np.float32))[0]
        np.testing.assert_allclose(translated.json()["embeddings"][0], expected, atol=1e-5)

        verified = http.post(
            "/verify",
            json={
                "pair": {
                    "a": {"model": SOURCE, "embedding": served[SOURCE].tolist()},
                    "b": {"model": TARGET, "image": _photo(lfw, PROBE)},
                }
            },
        )
        assert verified.status_code == 200, verified.text
        result = verified.json()["results"][0]
        probe_vector = (
            pipeline.embed_image(_bgr(lfw, PROBE), [TARGET], DetectionOptions())[0].embeddings[0].vector
        )
        # without a cohort the service compares through one map, in the space whose map has the
        # better recorded quality (the shipped set's raw thresholds through both maps are pooled over
        # four populations and too strict on people like these), and says which
        if result["space"] == TARGET:
            local_score = float(expected @ probe_vector)
        else:
            assert result["space"] == SOURCE and result["translated"] == "b"
            back = bank.maps[(TARGET, SOURCE)].apply(probe_vector[None].astype(np.float32))[0]
            local_score = float(served[SOURCE] @ back)
        assert result["score"] == pytest.approx(local_score, abs=1e-4)
        assert result["match"] is True and result["comparison"] == "cross"


def test_identity_system_rollout_end_to_end(
    container: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The compose stack's identity system: PostgreSQL, the service and the client's whole roll-out
    (examples/identity_system.py), whose own checks hold the printed rates to the stated ones."""
    _, env = container
    output = _run([*_compose(), "-p", PROJECT, "run", "--rm", "identity-client"], env, timeout=1200)
    with capsys.disabled():  # the TAR / FAR table, in the CI log
        print("\n" + output)
    lines = output.splitlines()
    assert "identity system roll-out: OK" in lines, output
    table = [line for line in lines if line.startswith(("| before", "| during", "| after"))]
    assert len(table) == 3, output
    assert "checked:" in output and "swapped: identity.people.template now holds" in output
