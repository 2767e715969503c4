"""Synthetic data shared by tests: one builder for each kind of thing, instead of a copy per file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facebridge.config import Settings
from facebridge.mapping.calibration import calibrate
from facebridge.mapping.mapfile import (
    FitProvenance,
    MapCalibration,
    MapMetadata,
    MapQuality,
    SpaceRef,
    map_filename,
    save_map,
)
from facebridge.vision.manifest import load_manifest

from .conftest import MODELS_DIR

SHIPPED_MANIFEST = load_manifest(MODELS_DIR / "manifest.toml")


def unit_rows(
    n: int, dim: int, seed: int | np.random.Generator, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """`n` random unit vectors of `dim` (rows of a Gaussian, L2-normalised): templates as a model's space
    holds them. `seed` is a seed or a generator a test keeps drawing from."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rows = rng.normal(size=(n, dim)).astype(dtype)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def shipped_space(model_id: str) -> SpaceRef:
    """The space of a shipped recognizer as a map file pins it (dim and weights' sha256)."""
    entry = SHIPPED_MANIFEST.get(model_id)
    assert entry is not None and entry.dim is not None and entry.sha256 is not None
    return SpaceRef(model=model_id, dim=entry.dim, sha256=entry.sha256)


def synthetic_map(
    source: SpaceRef | str,
    target: SpaceRef | str,
    mean_cosine: float = 0.8,
    seed: int = 0,
) -> tuple[MapMetadata, np.ndarray, np.ndarray]:
    """A map file's content without fitting anything: random affine tensors and a calibration from
    synthetic scores. A space given by id is a shipped recognizer's (`shipped_space`), so the bank
    loads the map against the shipped manifest; a SpaceRef may be any made-up space."""
    src = shipped_space(source) if isinstance(source, str) else source
    tgt = shipped_space(target) if isinstance(target, str) else target
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
            seed=seed,
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


def write_synthetic_map(
    directory: Path, source: SpaceRef | str, target: SpaceRef | str, mean_cosine: float = 0.8, seed: int = 0
) -> Path:
    """`synthetic_map` saved under its bank file name in `directory`."""
    meta, weight, bias = synthetic_map(source, target, mean_cosine, seed)
    path = directory / map_filename(meta.source.model, meta.target.model)
    save_map(path, meta, weight, bias)
    return path


# made-up spaces of a synthetic bank, each pinned to made-up weights
SYNTHETIC_DIMS = {"net-a": 8, "net-b": 12, "net-c": 6}
SYNTHETIC_PINS = {"net-a": "a" * 64, "net-b": "b" * 64, "net-c": "c" * 64}


def synthetic_space(model: str) -> SpaceRef:
    return SpaceRef(model=model, dim=SYNTHETIC_DIMS[model], sha256=SYNTHETIC_PINS[model])


def service_settings(root: Path, **changes: Any) -> Settings:
    """Settings of a service under `root`: the shipped manifest (pins, dims) with no model file, so
    nothing loads; maps from `root/maps`."""
    (root / "models").mkdir(exist_ok=True)
    (root / "maps").mkdir(exist_ok=True)
    return Settings(
        models_dir=root / "models",
        mappings_dir=root / "maps",
        cache_dir=root / "cache",
        auth_disabled=True,
        providers="cpu",
        audit_log=root / "audit.log",
        **changes,
    )


def synthetic_bank_settings(root: Path) -> Settings:
    """`service_settings` with two synthetic maps, net-a -> net-b -> net-c."""
    settings = service_settings(root)
    write_synthetic_map(root / "maps", synthetic_space("net-a"), synthetic_space("net-b"), seed=1)
    write_synthetic_map(root / "maps", synthetic_space("net-b"), synthetic_space("net-c"), seed=2)
    return settings
