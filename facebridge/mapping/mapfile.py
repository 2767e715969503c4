"""Map and space files: a documented, pickle-free format that is verified before it is served.

A map is one safetensors file holding `weight` (d_source x d_target, float32) and `bias` (d_target,)
with the JSON metadata (`MapMetadata`) under the key "facebridge". A nonlinear map adds a residual MLP,
all four tensors or none: `residual.in_weight` (d_source, h), `residual.in_bias` (h,),
`residual.out_weight` (h, d_target) and `residual.out_bias` (d_target,), with h recorded as
`MapMetadata.hidden`. The map computes

    x @ weight + bias + relu(x @ in_weight + in_bias) @ out_weight + out_bias

(then the service L2-normalises rows). A map may also carry a per-template confidence predictor
(facebridge/mapping/confidence.py), all four tensors or none: `confidence.source_weight` (d_source,),
`confidence.target_weight` (d_target,), `confidence.norm_weight` (2,) and `confidence.bias` (1,), described
by `MapMetadata.confidence`; with r the raw output above (before normalisation), the expected cosine
between the translated template and the target model's own embedding of the same photo is

    clip(x . source_weight + (r / |r|) . target_weight + [|r|, |r|^2] . norm_weight + bias, -1, 1)

`tensor_sha256` is the sha256 of the tensors' little-endian float32 bytes in the order of `TENSOR_ORDER`
(weight, bias, then the residual tensors, then the confidence tensors, each group when present), so a
file without the optional groups keeps the digest it always had.

A space's same-space calibration is a JSON file (`SpaceCalibration`). Loading checks names, shapes,
dtypes, finiteness and the recorded sha256 of the tensors, so a truncated, corrupted or edited file is
refused instead of silently translating wrongly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from facebridge.mapping.calibration import Calibration

MAP_FORMAT = 1
METADATA_KEY = "facebridge"
MAP_SUFFIX = ".safetensors"
SPACE_SUFFIX = ".space.json"
AFFINE_NAMES = ("weight", "bias")
RESIDUAL_NAMES = ("residual.in_weight", "residual.in_bias", "residual.out_weight", "residual.out_bias")
CONFIDENCE_NAMES = (
    "confidence.source_weight",
    "confidence.target_weight",
    "confidence.norm_weight",
    "confidence.bias",
)
CONFIDENCE_NORM_FEATURES = ("raw_norm", "raw_norm_squared")  # what confidence.norm_weight multiplies
TENSOR_ORDER = (*AFFINE_NAMES, *RESIDUAL_NAMES, *CONFIDENCE_NAMES)  # the order tensor_sha256 hashes them in


class MapFileError(ValueError):
    """A map or space file failed its checks; the message says which and why."""


class SpaceRef(BaseModel):
    """An embedding space: a recognizer's output, pinned to the exact weights by sha256."""

    model: str
    dim: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FitPopulation(BaseModel):
    """One population a map was fitted on: how much of it, with what weight, under which terms."""

    name: str
    images: int = Field(description="distinct photos of this population in the fit")
    identities: int | None = Field(default=None, description="None: no identity labels (unlabelled photos)")
    rows: int | None = Field(default=None, description="rows after weighing populations (repeats or draws)")
    source: str = Field(default="", description="where the photos come from (SOURCE.txt's first sentence)")
    terms: str = Field(default="", description="the terms the population's SOURCE.txt states")


class FitProvenance(BaseModel):
    dataset: str
    images: int
    identities: int
    heldout_images: int
    heldout_identities: int
    pairing: str = Field(description="how source and target rows correspond, e.g. 'same image'")
    seed: int
    selection: str | None = Field(default=None, description="how the method was chosen among candidates")
    populations: list[FitPopulation] = Field(
        default_factory=list, description="every population the map saw (empty in files that predate it)"
    )


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


class ConfidenceInfo(BaseModel):
    """How a map's confidence predictor was learned; the predictor itself is the confidence.* tensors."""

    target: str = Field(
        default="cosine between the translated template and the target model's embedding of the same photo"
    )
    features: list[str] = Field(description="what the predictor reads, in the order of its tensors")
    rows: int = Field(description="held-out (out-of-fold) photos it was fitted on")
    identities: int
    heldout: str = Field(description="how the rows were kept out of the map that translated them")
    alpha: float = Field(description="ridge penalty chosen by grouped cross-validation")
    spearman: float | None = Field(
        default=None,
        description="Spearman of predicted and actual fidelity (predictor cross-validated by identity)",
    )
    mean_actual: float | None = Field(default=None, description="mean actual cosine of those rows")


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
    hidden: int | None = Field(
        default=None, gt=0, description="width of the residual MLP; absent for an affine map"
    )
    confidence: ConfidenceInfo | None = Field(
        default=None, description="the per-template confidence predictor's provenance; absent without one"
    )

    @property
    def id(self) -> str:
        return map_id(self.source.model, self.target.model)


@dataclass(frozen=True)
class ResidualTensors:
    """The residual MLP of a nonlinear map: relu(x @ in_weight + in_bias) @ out_weight + out_bias."""

    in_weight: np.ndarray  # float32 (d_source, h)
    in_bias: np.ndarray  # float32 (h,)
    out_weight: np.ndarray  # float32 (h, d_target)
    out_bias: np.ndarray  # float32 (d_target,)

    @property
    def hidden(self) -> int:
        return int(self.in_bias.shape[0])

    def named(self) -> dict[str, np.ndarray]:
        """The tensors under their file names, in TENSOR_ORDER."""
        arrays = (self.in_weight, self.in_bias, self.out_weight, self.out_bias)
        return dict(zip(RESIDUAL_NAMES, arrays, strict=True))

    def as_float32(self) -> ResidualTensors:
        """C-contiguous float32 copies (when needed), as stored and hashed."""
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in self.named().values()]
        return ResidualTensors(*arrays)


@dataclass(frozen=True)
class ConfidenceTensors:
    """A map's per-template confidence predictor (formula in this module's docstring)."""

    source_weight: np.ndarray  # float32 (d_source,)
    target_weight: np.ndarray  # float32 (d_target,)
    norm_weight: np.ndarray  # float32 (2,): raw output norm and its square
    bias: np.ndarray  # float32 (1,)

    def named(self) -> dict[str, np.ndarray]:
        """The tensors under their file names, in TENSOR_ORDER."""
        arrays = (self.source_weight, self.target_weight, self.norm_weight, self.bias)
        return dict(zip(CONFIDENCE_NAMES, arrays, strict=True))

    def as_float32(self) -> ConfidenceTensors:
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in self.named().values()]
        return ConfidenceTensors(*arrays)


@dataclass(frozen=True)
class MapTensors:
    """What `load_map` returns: verified metadata and tensors; `residual` is None for an affine map,
    `confidence` None for a map without a confidence predictor."""

    meta: MapMetadata
    weight: np.ndarray  # float32 (d_source, d_target)
    bias: np.ndarray  # float32 (d_target,)
    residual: ResidualTensors | None = None
    confidence: ConfidenceTensors | None = None


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


def tensor_digest(
    weight: np.ndarray,
    bias: np.ndarray,
    residual: ResidualTensors | None = None,
    confidence: ConfidenceTensors | None = None,
) -> str:
    """sha256 over the tensors' float32 bytes in TENSOR_ORDER; affine maps hash weight and bias only."""
    digest = hashlib.sha256()
    arrays = [
        weight,
        bias,
        *(residual.named().values() if residual is not None else ()),
        *(confidence.named().values() if confidence is not None else ()),
    ]
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()


def save_map(
    path: Path,
    meta: MapMetadata,
    weight: np.ndarray,
    bias: np.ndarray,
    residual: ResidualTensors | None = None,
    confidence: ConfidenceTensors | None = None,
    confidence_info: ConfidenceInfo | None = None,
) -> MapMetadata:
    """Write a map atomically; returns the metadata as stored (tensor sha256 and hidden width filled).

    `confidence` is the predictor's tensors (ConfidenceModel.tensors()) and `confidence_info` its
    provenance (ConfidenceModel.info(); default: the metadata's own). Without `confidence` the file has no
    predictor and any `meta.confidence` is dropped: a predictor learned for other weights would mislead.
    """
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    residual = residual.as_float32() if residual is not None else None
    confidence = confidence.as_float32() if confidence is not None else None
    info = None if confidence is None else (confidence_info or meta.confidence)
    if confidence is not None and info is None:
        raise ValueError("confidence tensors need their ConfidenceInfo (confidence_info or meta.confidence)")
    meta = meta.model_copy(
        update={
            "tensor_sha256": tensor_digest(weight, bias, residual, confidence),
            "hidden": residual.hidden if residual is not None else None,
            "confidence": info,
        }
    )
    tensors = {
        "weight": weight,
        "bias": bias,
        **(residual.named() if residual is not None else {}),
        **(confidence.named() if confidence is not None else {}),
    }
    # files without the optional parts carry no `hidden` / `confidence` key: their header reads as before
    absent = {key for key in ("hidden", "confidence") if getattr(meta, key) is None}
    header = meta.model_dump_json(exclude=absent or None)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: header})
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


def load_map(path: Path) -> MapTensors:
    """Read and verify one map file; raises MapFileError naming the problem."""
    try:
        meta = MapMetadata.model_validate_json(_read_metadata(path)[METADATA_KEY])
        tensors = load_file(str(path))
    except KeyError as exc:
        raise MapFileError(f"{path.name}: no '{METADATA_KEY}' metadata") from exc
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise MapFileError(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from exc
    _check_names(path, tensors)
    _check_arrays(path, tensors)
    weight, bias = tensors["weight"], tensors["bias"]
    residual = (
        ResidualTensors(*(tensors[n] for n in RESIDUAL_NAMES)) if RESIDUAL_NAMES[0] in tensors else None
    )
    confidence = (
        ConfidenceTensors(*(tensors[n] for n in CONFIDENCE_NAMES)) if CONFIDENCE_NAMES[0] in tensors else None
    )
    _check_shapes(path, meta, weight, bias, residual)
    _check_confidence(path, meta, confidence)
    digest = tensor_digest(weight, bias, residual, confidence)
    if digest != meta.tensor_sha256:
        raise MapFileError(
            f"{path.name}: tensor sha256 {digest[:16]}… differs from the recorded {meta.tensor_sha256[:16]}…"
        )
    if meta.source.model == meta.target.model:
        raise MapFileError(f"{path.name}: source and target are the same space")
    return MapTensors(meta, weight, bias, residual, confidence)


def _check_names(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Exactly weight and bias, plus all four residual (and confidence) tensors or none: nothing is
    silently ignored."""
    names = set(tensors)
    unknown = sorted(names - set(TENSOR_ORDER))
    if unknown:
        raise MapFileError(
            f"{path.name}: unknown tensor(s) {unknown}; a map holds {list(AFFINE_NAMES)} "
            f"and optionally {list(RESIDUAL_NAMES)} and {list(CONFIDENCE_NAMES)}"
        )
    missing = [n for n in AFFINE_NAMES if n not in names]
    if missing:
        raise MapFileError(f"{path.name}: expected tensors weight and bias, missing {missing}")
    present = [n for n in RESIDUAL_NAMES if n in names]
    if present and len(present) != len(RESIDUAL_NAMES):
        absent = [n for n in RESIDUAL_NAMES if n not in names]
        raise MapFileError(f"{path.name}: residual tensors come all four or none; missing {absent}")
    present = [n for n in CONFIDENCE_NAMES if n in names]
    if present and len(present) != len(CONFIDENCE_NAMES):
        absent = [n for n in CONFIDENCE_NAMES if n not in names]
        raise MapFileError(f"{path.name}: confidence tensors come all four or none; missing {absent}")


def _check_arrays(path: Path, tensors: dict[str, np.ndarray]) -> None:
    for name in TENSOR_ORDER:
        array = tensors.get(name)
        if array is None:
            continue
        if array.dtype != np.float32:
            raise MapFileError(f"{path.name}: tensor {name} is {array.dtype}; tensors must be float32")
        if not np.isfinite(array).all():
            raise MapFileError(f"{path.name}: tensor {name} contains NaN or Inf")


def _check_shapes(
    path: Path, meta: MapMetadata, weight: np.ndarray, bias: np.ndarray, residual: ResidualTensors | None
) -> None:
    """Shapes must agree with the metadata's dims and hidden width, and with each other."""
    expected = (meta.source.dim, meta.target.dim)
    if weight.shape != expected or bias.shape != (meta.target.dim,):
        raise MapFileError(
            f"{path.name}: weight {weight.shape} / bias {bias.shape} do not match dims {expected}"
        )
    if residual is None:
        if meta.hidden is not None:
            raise MapFileError(f"{path.name}: metadata records hidden={meta.hidden} but no residual tensors")
        return
    h = residual.in_bias.shape[0] if residual.in_bias.ndim == 1 else -1
    wanted = {
        "residual.in_weight": (meta.source.dim, h),
        "residual.in_bias": (h,),
        "residual.out_weight": (h, meta.target.dim),
        "residual.out_bias": (meta.target.dim,),
    }
    for name, array in residual.named().items():
        if h <= 0 or array.shape != wanted[name]:
            raise MapFileError(
                f"{path.name}: residual shapes {[a.shape for a in residual.named().values()]} are not "
                f"(d_source, h), (h,), (h, d_target), (d_target,) for dims {expected}"
            )
    if meta.hidden != h:
        raise MapFileError(f"{path.name}: residual hidden width {h}, the metadata records {meta.hidden}")


def _check_confidence(path: Path, meta: MapMetadata, confidence: ConfidenceTensors | None) -> None:
    """Confidence tensors agree with the dims, and come with their metadata (and only with it)."""
    if confidence is None:
        if meta.confidence is not None:
            raise MapFileError(f"{path.name}: metadata describes a confidence predictor but no tensors")
        return
    if meta.confidence is None:
        raise MapFileError(f"{path.name}: confidence tensors without their metadata")
    wanted = ((meta.source.dim,), (meta.target.dim,), (len(CONFIDENCE_NORM_FEATURES),), (1,))
    shapes = tuple(a.shape for a in confidence.named().values())
    if shapes != wanted:
        raise MapFileError(
            f"{path.name}: confidence shapes {list(shapes)} are not (d_source,), (d_target,), (2,), (1,) "
            f"for dims {(meta.source.dim, meta.target.dim)}"
        )


def save_space(path: Path, space: SpaceCalibration) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(space.model_dump_json(indent=2) + "\n")
    tmp.replace(path)


def load_space(path: Path) -> SpaceCalibration:
    try:
        return SpaceCalibration.model_validate_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise MapFileError(f"{path.name}: {exc}") from exc
