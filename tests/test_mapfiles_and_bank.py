"""Map files round-trip and are verified; the bank refuses bad files, keeps the rest, and composes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from facebridge.mapping.bank import MappingBank
from facebridge.mapping.mapfile import (
    MapFileError,
    load_map,
    map_filename,
    save_map,
)

from .factories import SHIPPED_MANIFEST, synthetic_map, write_synthetic_map


def test_round_trip(tmp_path: Path) -> None:
    meta, weight, bias = synthetic_map("arcface-mbf128", "sirius-mbf192")
    path = tmp_path / "m.safetensors"
    saved = save_map(path, meta, weight, bias)
    loaded = load_map(path)
    assert loaded.meta == saved and len(saved.tensor_sha256) == 64
    assert loaded.residual is None and saved.hidden is None
    np.testing.assert_array_equal(loaded.weight, weight)
    np.testing.assert_array_equal(loaded.bias, bias)
    assert b"pickle" not in path.read_bytes()[:8]


def test_corrupted_truncated_and_edited_files_are_refused(tmp_path: Path) -> None:
    good = write_synthetic_map(tmp_path, "arcface-mbf128", "sirius-mbf192")
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
    write_synthetic_map(tmp_path, "arcface-mbf128", "sirius-mbf192")
    other = write_synthetic_map(tmp_path, "sirius-mbf192", "arcface-mbf128", seed=1)
    shutil.copy(other, tmp_path / "broken.safetensors")
    (tmp_path / "broken.safetensors").write_bytes((tmp_path / "broken.safetensors").read_bytes()[:-7])
    # a map whose source hash is not the weights the manifest pins
    meta, weight, bias = synthetic_map("dlib-r29-128", "arcface-mbf128")
    stale = meta.model_copy(update={"source": meta.source.model_copy(update={"sha256": "0" * 64})})
    save_map(tmp_path / map_filename("dlib-r29-128", "arcface-mbf128"), stale, weight, bias)

    bank = MappingBank.load(tmp_path, SHIPPED_MANIFEST)
    assert set(bank.maps) == {("arcface-mbf128", "sirius-mbf192"), ("sirius-mbf192", "arcface-mbf128")}
    reasons = {r.file: r.reason for r in bank.refused}
    assert "broken.safetensors" in reasons
    assert "manifest pins" in reasons[map_filename("dlib-r29-128", "arcface-mbf128")]


def test_reverse_maps_are_separate_not_transposes(tmp_path: Path) -> None:
    write_synthetic_map(tmp_path, "arcface-mbf128", "sirius-mbf192")
    bank = MappingBank.load(tmp_path, SHIPPED_MANIFEST)
    assert bank.find_path("arcface-mbf128", "sirius-mbf192") is not None
    assert bank.find_path("sirius-mbf192", "arcface-mbf128") is None


def test_composition_picks_the_best_recorded_path(tmp_path: Path) -> None:
    write_synthetic_map(tmp_path, "arcface-mbf128", "sirius-mbf192", mean_cosine=0.9)
    write_synthetic_map(tmp_path, "sirius-mbf192", "dlib-r29-128", mean_cosine=0.9)
    write_synthetic_map(tmp_path, "arcface-mbf128", "faceplugin-mbf512", mean_cosine=0.7, seed=2)
    write_synthetic_map(tmp_path, "faceplugin-mbf512", "dlib-r29-128", mean_cosine=0.95, seed=3)
    bank = MappingBank.load(tmp_path, SHIPPED_MANIFEST)
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
    write_synthetic_map(tmp_path, "arcface-mbf128", "dlib-r29-128", mean_cosine=0.5, seed=4)
    direct = MappingBank.load(tmp_path, SHIPPED_MANIFEST).find_path("arcface-mbf128", "dlib-r29-128")
    assert direct is not None and not direct.composed
    assert bank.find_path("dlib-r29-128", "arcface-mbf128") is None
