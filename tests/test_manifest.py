"""The manifest describes the shared models exactly, and bad files are refused with a reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from facebridge.vision.manifest import Manifest, load_manifest
from facebridge.vision.registry import ModelRegistry
from facebridge.vision.runtime import choose_providers

from .conftest import DETECTORS, MODELS_DIR, RECOGNIZERS, SHARED_MODELS

MANIFEST = MODELS_DIR / "manifest.toml"


def test_manifest_matches_shared_models_json(shared_models_json: dict) -> None:
    manifest = load_manifest(MANIFEST)
    for record in shared_models_json["recognizers"]:
        entry = manifest.get(record["suggested_id"])
        assert entry is not None, record["suggested_id"]
        assert (entry.file, entry.sha256, entry.dim) == (record["file"], record["sha256"], record["dim"])
        assert (entry.input_name, entry.layout, entry.size, entry.color) == (
            record["input"]["name"],
            record["input"]["layout"],
            record["input"]["size"],
            record["input"]["color"],
        )
        assert entry.alignment == record["alignment"]
        assert entry.lfw_reference == record["lfw_10fold"]
        template = manifest.templates[record["alignment"]]
        assert template.points == [
            tuple(p) for p in shared_models_json["alignment_templates"][record["alignment"]]["points"]
        ]
    for record in shared_models_json["detectors"]:
        entry = manifest.get(record["suggested_id"])
        assert entry is not None and entry.sha256 == record["sha256"] and entry.kind == "detector"


def test_manifest_lists_well_known_public_models() -> None:
    manifest = load_manifest(MANIFEST)
    for model_id in [
        "sface",
        "buffalo_l-r50",
        "buffalo_l-det10g",
        "buffalo_s-mbf",
        "antelopev2-r100",
        "yunet",
    ]:
        entry = manifest.get(model_id)
        assert entry is not None and entry.source.url and entry.source.url.startswith("https://")


def test_invalid_manifest_names_the_entry() -> None:
    data = {"templates": {}, "models": [{"id": "x", "kind": "recognizer", "file": "x.onnx"}]}
    with pytest.raises(ValidationError, match="recognizer 'x' lacks dim"):
        Manifest.model_validate(data)


def _registry_over(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(load_manifest(MANIFEST), tmp_path, choose_providers("cpu"))


def test_missing_file_is_unavailable_not_an_error(tmp_path: Path) -> None:
    shutil.copy(SHARED_MODELS / "face_detection_yunet_2023mar.onnx", tmp_path)
    registry = _registry_over(tmp_path)
    registry.load()
    assert registry.status["yunet"].state == "loaded"
    assert registry.status["arcface-mbf128"].state == "unavailable"
    assert "not found" in registry.status["arcface-mbf128"].reason


def test_hash_mismatch_is_refused_and_the_rest_loads(tmp_path: Path) -> None:
    for name in ["insightface_mobilefacenet_y1_arcface_128.onnx", "dlib_resnet29_faceapi_128.onnx"]:
        shutil.copy(SHARED_MODELS / name, tmp_path)
    tampered = tmp_path / "insightface_mobilefacenet_y1_arcface_128.onnx"
    data = bytearray(tampered.read_bytes())
    data[-10] ^= 0xFF
    tampered.write_bytes(bytes(data))
    registry = _registry_over(tmp_path)
    registry.load()
    status = registry.status["arcface-mbf128"]
    assert status.state == "refused"
    assert "sha256" in status.reason and "manifest pins 190aabc5" in status.reason
    assert registry.status["dlib-r29-128"].state == "loaded"
    assert "arcface-mbf128" not in registry.recognizers


def test_all_shared_models_load(registry: ModelRegistry) -> None:
    for model_id in RECOGNIZERS + DETECTORS:
        assert registry.status[model_id].state == "loaded"
    assert registry.status[RECOGNIZERS[0]].providers == ["CPUExecutionProvider"]
