"""Map and space files: a documented, pickle-free format that is verified before it is served.

A map is one safetensors file holding `weight` (d_source x d_target, float32) and `bias` (d_target,)
with the JSON metadata (`MapMetadata`) under the key "facebridge". A space's same-space calibration is a
JSON file (`SpaceCalibration`). Loading checks shapes, finiteness and the recorded sha256 of the tensors,
so a truncated, corrupted or edited file is refused instead of silently translating wrongly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from app.mapping.calibration import Calibration

MAP_FORMAT = 1
METADATA_KEY = "facebridge"
MAP_SUFFIX = ".safetensors"
SPACE_SUFFIX = ".space.json"


class MapFileError(ValueError):
    """A map or space file failed its checks; the message says which and why."""


class SpaceRef(BaseModel):
    """An embedding space: a recognizer's output, pinned to the exact weights by sha256."""

    model: str
    dim: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FitProvenance(BaseModel):
    dataset: str
    images: int
    identities: int
    heldout_images: int
    heldout_identities: int
    pairing: str = Field(description="how source and target rows correspond, e.g. 'same image'")
    seed: int
    selection: str | None = Field(default=None, description="how the method was chosen among candidates")


class MapQuality(BaseModel):
    """Measured on held-out identities never seen by the fit."""

    mean_cosine: float | None = Field(
        description="mean cosine between mapped and true target embeddings (None: not measured)"
    )
    r2: float | None = Field(description="variance of the target embeddings explained by the map")
    accuracy_source_native: float | None = None
    accuracy_target_native: float | None = None
    accuracy_mapped: float | None = Field(default=None, description="both sides mapped source→target")
    accuracy_cross: float | None = Field(default=None, description="mapped source vs native target")
    verification_pairs: int = Field(default=0, description="0 when fitted without identity labels")


class MapCalibration(BaseModel):
    cross: Calibration = Field(description="mapped source vs native target")
    mapped: Calibration = Field(description="mapped source vs mapped source")


class MapMetadata(BaseModel):
    format: int = MAP_FORMAT
    source: SpaceRef
    target: SpaceRef
    method: str
    params: dict[str, Any]
    fitted: dict[str, Any] = Field(
        default_factory=dict, description="learned hyperparameters, e.g. ridge alpha_"
    )
    provenance: FitProvenance
    quality: MapQuality
    calibration: MapCalibration | None = Field(default=None, description="absent without identity labels")
    created: str
    code_version: str
    tensor_sha256: str = ""

    @property
    def id(self) -> str:
        return map_id(self.source.model, self.target.model)


class SpaceCalibration(BaseModel):
    format: int = MAP_FORMAT
    space: SpaceRef
    dataset: str
    images: int
    identities: int
    calibration: Calibration
    created: str
    code_version: str


def map_id(source: str, target: str) -> str:
    return f"{source}->{target}"


def map_filename(source: str, target: str) -> str:
    return f"{source}__{target}{MAP_SUFFIX}"


def tensor_digest(weight: np.ndarray, bias: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (weight, bias):
        digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()


def save_map(path: Path, meta: MapMetadata, weight: np.ndarray, bias: np.ndarray) -> MapMetadata:
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    meta = meta.model_copy(update={"tensor_sha256": tensor_digest(weight, bias)})
    tmp = path.with_name(path.name + ".tmp")
    save_file({"weight": weight, "bias": bias}, str(tmp), metadata={METADATA_KEY: meta.model_dump_json()})
    tmp.chmod(0o644)
    tmp.replace(path)
    return meta


def _read_metadata(path: Path) -> dict[str, str]:
    """The safetensors JSON header's __metadata__ (the format: 8-byte length, then JSON)."""
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if size <= 0 or size > 100_000_000:
            raise MapFileError(f"{path.name}: not a safetensors file (header size {size})")
        header = json.loads(handle.read(size))
    return dict(header.get("__metadata__") or {})


def load_map(path: Path) -> tuple[MapMetadata, np.ndarray, np.ndarray]:
    """Read and verify one map file; raises MapFileError naming the problem."""
    try:
        meta = MapMetadata.model_validate_json(_read_metadata(path)[METADATA_KEY])
        tensors = load_file(str(path))
    except KeyError as exc:
        raise MapFileError(f"{path.name}: no '{METADATA_KEY}' metadata") from exc
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise MapFileError(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from exc
    if set(tensors) != {"weight", "bias"}:
        raise MapFileError(f"{path.name}: expected tensors weight and bias, found {sorted(tensors)}")
    weight, bias = tensors["weight"], tensors["bias"]
    expected = (meta.source.dim, meta.target.dim)
    if weight.shape != expected or bias.shape != (meta.target.dim,):
        raise MapFileError(
            f"{path.name}: weight {weight.shape} / bias {bias.shape} do not match dims {expected}"
        )
    if weight.dtype != np.float32 or bias.dtype != np.float32:
        raise MapFileError(f"{path.name}: tensors must be float32")
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise MapFileError(f"{path.name}: tensors contain NaN or Inf")
    digest = tensor_digest(weight, bias)
    if digest != meta.tensor_sha256:
        raise MapFileError(
            f"{path.name}: tensor sha256 {digest[:16]}… differs from the recorded {meta.tensor_sha256[:16]}…"
        )
    if meta.source.model == meta.target.model:
        raise MapFileError(f"{path.name}: source and target are the same space")
    return meta, weight, bias


def save_space(path: Path, space: SpaceCalibration) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(space.model_dump_json(indent=2) + "\n")
    tmp.replace(path)


def load_space(path: Path) -> SpaceCalibration:
    try:
        return SpaceCalibration.model_validate_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise MapFileError(f"{path.name}: {exc}") from exc
