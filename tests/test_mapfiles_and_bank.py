"""Map files round-trip and are verified; the bank refuses bad files, keeps the rest, and composes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from facebridge.mapping.bank import MappingBank
from facebridge.mapping.calibration import calibrate
from facebridge.mapping.mapfile import (
    FitProvenance,
    MapCalibration,
    MapFileError,
    MapMetadata,
    MapQuality,
    SpaceRef,
    load_map,
    map_filename,
    save_map,
)
from facebridge.vision.manifest import load_manifest

from .conftest import MODELS_DIR

MANIFEST = load_manifest(MODELS_DIR / "manifest.toml")


def space(model_id: str) -> SpaceRef:
    entry = MANIFEST.get(model_id)
    assert entry is not None and entry.dim is not None and entry.sha256 is not None
    return SpaceRef(model=model_id, dim=entry.dim, sha256=entry.sha256)


def make_map(
    source: str, target: str, mean_cosine: float = 0.8, seed: int = 0
) -> tuple[MapMetadata, np.ndarray, np.ndarray]:
    src, tgt = space(source), space(target)
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(src.dim, tgt.dim)).astype(np.float32)
    bias = rng.normal(size=tgt.dim).astype(np.float32)
    calibration = calibrate(rng.normal(0.6, 0.1, 500), rng.normal(0, 0.1, 50_000))
    meta = MapMetadata(
        source=src,
        target=tgt,
        method="ridge",
        params={"alphas": [1.0]},
        provenance=FitProvenance(
            dataset="synthetic",
            images=10,
            identities=5,
            heldout_images=4,
            heldout_identities=2,
            pairing="same image through both models",
            seed=0,
        ),
        quality=MapQuality(
            mean_cosine=mean_cosine,
            r2=0.5,
            accuracy_source_native=0.99,
            accuracy_target_native=0.99,
            accuracy_mapped=0.98,
            accuracy_cross=0.97,
            verification_pairs=100,
        ),
        calibration=MapCalibration(cross=calibration, mapped=calibration),
        created="2026-01-01T00:00:00+00:00",
        code_version="test",
    )
    return meta, weight, bias


def write(directory: Path, source: str, target: str, mean_cosine: float = 0.8, seed: int = 0) -> Path:
    meta, weight, bias = make_map(source, target, mean_cosine, seed)
    path = directory / map_filename(source, target)
    save_map(path, meta, weight, bias)
    return path


def test_round_trip(tmp_path: Path) -> None:
    meta, weight, bias = make_map("arcface-mbf128", "sirius-mbf192")
    path = tmp_path / "m.safetensors"
    saved = save_map(path, meta, weight, bias)
    loaded = load_map(path)
    assert loaded.meta == saved and len(saved.tensor_sha256) == 64
    assert loaded.residual is None and saved.hidden is None
    np.testing.assert_array_equal(loaded.weight, weight)
    np.testing.assert_array_equal(loaded.bias, bias)
    assert b"pickle" not in path.read_bytes()[:8]


def test_corrupted_truncated_and_edited_files_are_refused(tmp_path: Path) -> None:
    good = write(tmp_path, "arcface-mbf128", "sirius-mbf192")
    data = bytearray(good.read_bytes())

    flipped = tmp_path / "flipped.safetensors"
    data_flipped = bytearray(data)
    data_flipped[-40] ^= 0x55  # inside the bias tensor
    flipped.write_bytes(bytes(data_flipped))
    with pytest.raises(MapFileError, match="tensor sha256"):
        load_map(flipped)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(MapFileError, match="unreadable"):
        load_map(truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(MapFileError):
        load_map(garbage)


def test_bank_refuses_bad_files_and_keeps_serving_the_rest(tmp_path: Path) -> None:
    write(tmp_path, "arcface-mbf128", "sirius-mbf192")
    other = write(tmp_path, "sirius-mbf192", "arcface-mbf128", seed=1)
    shutil.copy(other, tmp_path / "broken.safetensors")
    (tmp_path / "broken.safetensors").write_bytes((tmp_path / "broken.safetensors").read_bytes()[:-7])
    # a map whose source hash is not the weights the manifest pins
    meta, weight, bias = make_map("dlib-r29-128", "arcface-mbf128")
    stale = meta.model_copy(update={"source": meta.source.model_copy(update={"sha256": "0" * 64})})
    save_map(tmp_path / map_filename("dlib-r29-128", "arcface-mbf128"), stale, weight, bias)

    bank = MappingBank.load(tmp_path, MANIFEST)
    assert set(bank.maps) == {("arcface-mbf128", "sirius-mbf192"), ("sirius-mbf192", "arcface-mbf128")}
    reasons = {r.file: r.reason for r in bank.refused}
    assert "broken.safetensors" in reasons
    assert "manifest pins" in reasons[map_filename("dlib-r29-128", "arcface-mbf128")]


def test_reverse_maps_are_separate_not_transposes(tmp_path: Path) -> None:
    write(tmp_path, "arcface-mbf128", "sirius-mbf192")
    bank = MappingBank.load(tmp_path, MANIFEST)
    assert bank.find_path("arcface-mbf128", "sirius-mbf192") is not None
    assert bank.find_path("sirius-mbf192", "arcface-mbf128") is None


def test_composition_picks_the_best_recorded_path(tmp_path: Path) -> None:
    write(tmp_path, "arcface-mbf128", "sirius-mbf192", mean_cosine=0.9)
    write(tmp_path, "sirius-mbf192", "dlib-r29-128", mean_cosine=0.9)
    write(tmp_path, "arcface-mbf128", "faceplugin-mbf512", mean_cosine=0.7, seed=2)
    write(tmp_path, "faceplugin-mbf512", "dlib-r29-128", mean_cosine=0.95, seed=3)
    bank = MappingBank.load(tmp_path, MANIFEST)
    path = bank.find_path("arcface-mbf128", "dlib-r29-128")
    assert path is not None and path.composed
    assert path.ids == ["arcface-mbf128->sirius-mbf192", "sirius-mbf192->dlib-r29-128"]  # 0.81 beats 0.665
    x = np.random.default_rng(5).normal(size=(7, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    first, second = (
        bank.maps[("arcface-mbf128", "sirius-mbf192")],
        bank.maps[("sirius-mbf192", "dlib-r29-128")],
    )
    np.testing.assert_allclose(path.apply(x), second.apply(first.apply(x)), atol=1e-6)
    assert np.allclose(np.linalg.norm(path.apply(x), axis=1), 1.0, atol=1e-5)
    # a direct map always wins over a chain
    write(tmp_path, "arcface-mbf128", "dlib-r29-128", mean_cosine=0.5, seed=4)
    assert not MappingBank.load(tmp_path, MANIFEST).find_path("arcface-mbf128", "dlib-r29-128").composed  # type: ignore[union-attr]
    assert bank.find_path("dlib-r29-128", "arcface-mbf128") is None
