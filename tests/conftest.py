"""Shared fixtures: the real models from ../shared/models, real LFW photos, a real uvicorn server."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from facebridge.config import Settings
from facebridge.embedding_cache import EmbeddingCache, build_cache
from facebridge.evaluation.lfw import Pair
from facebridge.mapping.fitting import fit_map, pair_caches
from facebridge.mapping.mapfile import SPACE_SUFFIX, map_filename, save_map, save_space
from facebridge.mapping.spaces import calibrate_space
from facebridge.vision.images import decode_image
from facebridge.vision.loading import open_registry
from facebridge.vision.pipeline import FacePipeline
from facebridge.vision.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_MODELS = SHARED / "models"
LFW = SHARED / "datasets" / "lfw"
MODELS_DIR = ROOT / "models"
RECOGNIZERS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128", "hse-mobilenet1024"]
DETECTORS = ["yunet", "scrfd-500m"]
# the `postgres` fixture (a throw-away PostgreSQL server per session) for every module
pytest_plugins = ["tests.postgres_server"]


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
        audit_log = log_path.with_name(log_path.stem + "-audit.log")  # never the checkout's .facebridge/
        full_env = {
            **os.environ,
            "FACEBRIDGE_LOG_LEVEL": "warning",
            "FACEBRIDGE_AUDIT_LOG": str(audit_log),
            **env,
        }
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facebridge", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
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


# two valid keys at once, as during a rotation
API_KEYS = ("test-key-current-5b1f", "test-key-next-9c2e")


@dataclass(frozen=True)
class ScopedKeys:
    """A keys file (facebridge keys) with one key per scope, each having only that scope."""

    file: Path
    keys: dict[str, str]  # scope -> key
    ids: dict[str, str]  # scope -> key id


@pytest.fixture(scope="session")
def scoped_keys(tmp_path_factory: pytest.TempPathFactory) -> ScopedKeys:
    from facebridge.keyfile import ALL_SCOPES, create_key

    file = tmp_path_factory.mktemp("keys") / "keys.json"
    keys, ids = {}, {}
    for scope in ALL_SCOPES:
        entry, keys[scope] = create_key(file, f"only-{scope.replace(':', '-')}", [scope])
        ids[scope] = entry.id
    return ScopedKeys(file, keys, ids)


SUBSET_MODELS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192"]
SUBSET_CACHE_DIR = ROOT / "cache" / "tests"


def subset_images(lfw_root: Path, identities: int = 250, per_identity: int = 4, seed: int = 0) -> list[str]:
    """A fixed random subset of LFW people with at least two photos (so genuine pairs exist)."""
    people = sorted(p.name for p in lfw_root.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2)
    chosen = np.random.default_rng(seed).choice(people, identities, replace=False)
    return sorted(
        str(photo.relative_to(lfw_root))
        for person in chosen
        for photo in sorted((lfw_root / person).glob("*.jpg"))[:per_identity]
    )


def subset_pairs(cache: EmbeddingCache, folds: int = 10, seed: int = 0) -> list[Pair]:
    """Identity-disjoint folds with every matched pair of each fold and as many mismatched ones."""
    rng = np.random.default_rng(seed)
    names = sorted(set(cache.identities.astype(str)))
    fold_of = {name: i % folds for i, name in enumerate(rng.permutation(names))}
    by_name: dict[str, list[str]] = {}
    for path in cache.paths.astype(str):
        by_name.setdefault(path.split("/", 1)[0], []).append(path)
    pairs = []
    for fold in range(folds):
        people = [n for n in names if fold_of[n] == fold]
        matched = [
            Pair(a, b, True, fold) for n in people for a, b in itertools.combinations(by_name[n][:3], 2)
        ]
        photos = [p for n in people for p in by_name[n]]
        mismatched: list[Pair] = []
        while len(mismatched) < len(matched):
            a, b = rng.choice(photos, 2, replace=False)
            if a.split("/")[0] != b.split("/")[0]:
                mismatched.append(Pair(str(a), str(b), False, fold))
        pairs += matched + mismatched
    return pairs


@pytest.fixture(scope="session")
def subset_caches(pipeline: FacePipeline, lfw: Path) -> dict[str, EmbeddingCache]:
    """Real embeddings of the LFW subset under three recognizers (kept across runs in cache/tests)."""
    SUBSET_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    images = subset_images(lfw)
    caches = {}
    for model_id in SUBSET_MODELS:
        out = SUBSET_CACHE_DIR / f"lfw-subset-{model_id}.npz"
        full = build_cache(pipeline, lfw, model_id, out, only=images, progress=False)
        rows = [full.index()[p] for p in images]
        caches[model_id] = EmbeddingCache(
            full.meta,
            full.paths[rows],
            full.identities[rows],
            full.digests[rows],
            full.detected[rows],
            full.embeddings[rows],
        )
    return caches


def full_network_statistics(pipeline: FacePipeline, lfw: Path, model_id: str, out: Path) -> None:
    """Full-network statistics of a model fitted on aligned crops of 120 LFW subset photos."""
    from facebridge.vision.alignment import align_face
    from facebridge.vision.full_network import FullNetworkEmbedding
    from facebridge.vision.layer_features import LayerFeatureExtractor
    from facebridge.vision.pipeline import DetectionOptions

    recognizer = pipeline.registry.recognizer(model_id)
    template = pipeline.registry.manifest.templates[recognizer.entry.alignment or ""]
    crops = []
    for rel in subset_images(lfw)[:120]:
        image = decode_image((lfw / rel).read_bytes(), max_bytes=1 << 24, max_pixels=1 << 24)
        faces = pipeline.detect(image, DetectionOptions(score_threshold=0.3, policy="center"))
        if faces:
            crops.append(align_face(image, faces[0].landmarks, template))
    extractor = LayerFeatureExtractor(pipeline.registry.model_path(model_id))
    features = extractor(recognizer.preprocess(crops))
    layers = [{"index": i, "channels": layer.channels} for i, layer in enumerate(extractor.layers)]
    out.parent.mkdir(parents=True, exist_ok=True)
    FullNetworkEmbedding().fit(features).save(out, model_id, recognizer.sha256, layers)


@pytest.fixture(scope="session")
def maps_dir(
    subset_caches: dict[str, EmbeddingCache],
    pipeline: FacePipeline,
    lfw: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Maps arcface→faceplugin and faceplugin→sirius (so arcface→sirius is a composition), same-space
    calibrations for arcface and faceplugin, and arcface's full-network statistics, all fitted here on
    the real subset."""
    from facebridge.vision.full_network import stats_path

    directory = tmp_path_factory.mktemp("mappings")
    full_network_statistics(pipeline, lfw, "arcface-mbf128", stats_path(directory, "arcface-mbf128"))
    for source, target in [("arcface-mbf128", "faceplugin-mbf512"), ("faceplugin-mbf512", "sirius-mbf192")]:
        fitted = fit_map(pair_caches(subset_caches[source], subset_caches[target], "lfw-subset"), "ridge")
        save_map(
            directory / map_filename(source, target),
            fitted.meta,
            fitted.weight,
            fitted.bias,
            None,
            fitted.confidence_tensors,
        )
    (directory / "spaces").mkdir()
    for model_id in ["arcface-mbf128", "faceplugin-mbf512"]:
        space = calibrate_space(subset_caches[model_id], "lfw-subset")
        save_space(directory / "spaces" / f"{model_id}{SPACE_SUFFIX}", space)
    return directory


@pytest.fixture(scope="session")
def server(
    settings: Settings, maps_dir: Path, scoped_keys: ScopedKeys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    live = LiveServer(
        {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_PROVIDERS": "cpu",
            "FACEBRIDGE_MAPPINGS_DIR": str(maps_dir),
            "FACEBRIDGE_MAX_EMBEDDINGS_PER_REQUEST": "2000",
            "FACEBRIDGE_MAX_PAIRS_PER_REQUEST": "100",
            "FACEBRIDGE_MAX_IMAGES_PER_REQUEST": "4",
            "FACEBRIDGE_MAX_IMAGE_BYTES": "2000000",
            "FACEBRIDGE_MAX_IMAGE_PIXELS": "4000000",
            "FACEBRIDGE_API_KEYS": ",".join(API_KEYS),  # plain keys with every scope
            "FACEBRIDGE_API_KEYS_FILE": str(scoped_keys.file),  # and one key per scope
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
    with httpx.Client(base_url=server.url, timeout=60.0, headers={"X-API-Key": API_KEYS[0]}) as http:
        yield http
