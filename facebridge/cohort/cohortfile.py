"""Cohort files: unlabelled templates of a deployment's own population, in one model's space.

A cohort is one safetensors file (`NAME.cohort.safetensors`) holding `templates` (m x d, float32,
unit rows) and, under the key "facebridge", JSON metadata (`CohortMetadata`): the space it belongs to
(model id, dim and the sha256 of the weights that made the templates) and its provenance (where the
templates came from, how many, when). Loading verifies names, dtype, shape against the space, finite
values and the recorded sha256 of the tensor, so a truncated or edited file is refused with a reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from facebridge import __version__
from facebridge.exceptions import FacebridgeError
from facebridge.mapping.mapfile import METADATA_KEY, SpaceRef

COHORT_FORMAT = 1
COHORT_SUFFIX = ".cohort.safetensors"
TENSOR = "templates"
MIN_COHORT = 50  # fewer templates give AS-norm statistics too noisy to trust (docs/thresholds.md)
# the smallest cohort with which the threshold study kept all 64 comparisons within 2x of nominal FAR
# at 1e-3 (1,000 did too; 200 kept 55, 100 kept 3: docs/thresholds.md, "How the result depends on the
# cohort")
RECOMMENDED_COHORT = 500
# what a cohort below RECOMMENDED_COHORT is told, after its size
SMALL_COHORT_NOTE = (
    f"below {RECOMMENDED_COHORT}, normalised FARs at nominal 1e-3 strayed beyond 2x of nominal in the "
    "threshold study (200 templates: 9 of 64 comparisons; 100: 61 of 64; docs/thresholds.md)"
)
MAX_COHORT = 100_000  # every comparison scores against the whole cohort


class CohortError(FacebridgeError, ValueError):
    """A cohort file or source failed its checks; the message says which and why."""


class CohortProvenance(BaseModel):
    """Where a cohort's templates came from."""

    kind: str = Field(description="photos | npy | parquet | postgres | pair-store")
    source: str = Field(description="the folder, file, table (password removed) or store it was read from")
    rows_read: int = Field(description="templates (or photos) found at the source")
    count: int = Field(description="templates kept in the cohort")
    sampled: bool = Field(default=False, description="true when a seeded sample of the source was kept")
    created: str
    code_version: str = __version__
    note: str | None = None


class CohortMetadata(BaseModel):
    format: int = COHORT_FORMAT
    space: SpaceRef
    provenance: CohortProvenance
    tensor_sha256: str = ""
    groups: list[str] | None = Field(
        default=None,
        description="the person of each template, in row order (a photo's sub-folder); unset: every "
        "template its own person. A cohort's own level (asnorm.cohort_scale) leaves out pairs of one person",
    )


@dataclass(frozen=True)
class Cohort:
    """A verified cohort: metadata and its (m, d) float32 unit templates."""

    meta: CohortMetadata
    templates: np.ndarray
    file: str = ""

    @property
    def id(self) -> str:
        """The file name without its suffix: what answers and GET /calibration call it."""
        name = Path(self.file).name
        return name[: -len(COHORT_SUFFIX)] if name.endswith(COHORT_SUFFIX) else name

    @property
    def model(self) -> str:
        return self.meta.space.model

    def __len__(self) -> int:
        return len(self.templates)

    @property
    def groups(self) -> np.ndarray:
        """Each row's person: the recorded one, else the row itself ("#17"), which also names the same
        photo in another model's cohort built from the same source in the same order."""
        if self.meta.groups is not None:
            return np.asarray(self.meta.groups)
        return np.char.add("#", np.arange(len(self.templates)).astype(str))


def unit_rows(templates: np.ndarray) -> np.ndarray:
    """C-contiguous float32 copy with L2-normalised rows; refuses NaN, inf and zero rows."""
    matrix = np.ascontiguousarray(templates, dtype=np.float32)
    if matrix.ndim != 2:
        raise CohortError(f"templates must be a 2-D matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise CohortError("templates contain NaN or inf")
    norms = np.linalg.norm(matrix, axis=1)
    if (norms == 0).any():
        raise CohortError(f"{int((norms == 0).sum())} template(s) are all zeros")
    return np.ascontiguousarray(matrix / norms[:, None], dtype=np.float32)


def tensor_digest(templates: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(templates, dtype="<f4").tobytes()).hexdigest()


def sample_rows(count: int, max_size: int, seed: int) -> np.ndarray:
    """The sorted rows a cohort keeps of `count` when there are more than `max_size`: one seeded rule,
    so a source read in batches picks the same templates as one held whole."""
    return np.sort(np.random.default_rng(seed).choice(count, max_size, replace=False))


def make_cohort(
    templates: np.ndarray,
    space: SpaceRef,
    kind: str,
    source: str,
    rows_read: int | None = None,
    max_size: int | None = None,
    seed: int = 0,
    note: str | None = None,
    sampled: bool = False,
    groups: list[str] | None = None,
) -> Cohort:
    """A cohort of `templates` (normalised; a seeded sample of `max_size` when there are more).
    `sampled`: the caller already drew `templates` as that sample (`sample_rows`) from a larger source.
    `groups`: each row's person, where the source knows it (see CohortMetadata)."""
    matrix = unit_rows(templates)
    if matrix.shape[1] != space.dim:
        raise CohortError(f"templates have dim {matrix.shape[1]}, {space.model} has dim {space.dim}")
    if groups is not None and len(groups) != len(matrix):
        raise CohortError(f"{len(groups)} groups for {len(matrix)} templates")
    read = len(matrix) if rows_read is None else rows_read
    if max_size is not None and len(matrix) > max_size:
        rows = sample_rows(len(matrix), max_size, seed)
        matrix = np.ascontiguousarray(matrix[rows])
        groups = None if groups is None else [groups[i] for i in rows]
        sampled = True
    _check_size(len(matrix), "the cohort")
    provenance = CohortProvenance(
        kind=kind,
        source=source,
        rows_read=read,
        count=len(matrix),
        sampled=sampled,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        note=note,
    )
    meta = CohortMetadata(
        space=space, provenance=provenance, tensor_sha256=tensor_digest(matrix), groups=groups
    )
    return Cohort(meta, matrix)


def _check_size(rows: int, what: str) -> None:
    if rows < MIN_COHORT:
        raise CohortError(f"{what} has {rows} templates; a cohort needs at least {MIN_COHORT}")
    if rows > MAX_COHORT:
        raise CohortError(f"{what} has {rows} templates; at most {MAX_COHORT} (sample it with --max)")


def save_cohort(path: Path, cohort: Cohort) -> Path:
    """Write atomically; a name without the cohort suffix gets it, so the service will find the file."""
    if not path.name.endswith(COHORT_SUFFIX):
        path = path.with_name(path.name.removesuffix(".safetensors") + COHORT_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {TENSOR: np.ascontiguousarray(cohort.templates)},
        str(tmp),
        metadata={METADATA_KEY: cohort.meta.model_dump_json()},
    )
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def load_cohort(path: Path) -> Cohort:
    """Read and verify one cohort file; raises CohortError naming the problem."""
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size <= 0 or size > 100_000_000:
                raise CohortError(f"{path.name}: not a safetensors file (header size {size})")
            header = json.loads(handle.read(size))
        meta = CohortMetadata.model_validate_json((header.get("__metadata__") or {})[METADATA_KEY])
        tensors = load_file(str(path))
    except KeyError as exc:
        raise CohortError(f"{path.name}: no '{METADATA_KEY}' metadata") from exc
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        if isinstance(exc, CohortError):
            raise
        raise CohortError(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from exc
    if set(tensors) != {TENSOR}:
        raise CohortError(f"{path.name}: expected exactly one tensor '{TENSOR}', found {sorted(tensors)}")
    templates = tensors[TENSOR]
    if templates.dtype != np.float32 or templates.ndim != 2:
        raise CohortError(
            f"{path.name}: templates must be a 2-D float32 matrix ({templates.dtype}, {templates.shape})"
        )
    if meta.format != COHORT_FORMAT:
        raise CohortError(f"{path.name}: cohort format {meta.format}, this version reads {COHORT_FORMAT}")
    if templates.shape[1] != meta.space.dim:
        raise CohortError(
            f"{path.name}: templates have dim {templates.shape[1]}, the file's space {meta.space.model} "
            f"has dim {meta.space.dim}"
        )
    if not np.isfinite(templates).all():
        raise CohortError(f"{path.name}: templates contain NaN or inf")
    digest = tensor_digest(templates)
    if digest != meta.tensor_sha256:
        raise CohortError(
            f"{path.name}: tensor sha256 {digest[:16]}… differs from the recorded {meta.tensor_sha256[:16]}…"
        )
    _check_size(len(templates), path.name)
    if meta.groups is not None and len(meta.groups) != len(templates):
        raise CohortError(f"{path.name}: {len(meta.groups)} groups for {len(templates)} templates")
    norms = np.linalg.norm(templates, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-4):
        raise CohortError(
            f"{path.name}: templates are not unit length (norms {norms.min():.3f} to {norms.max():.3f})"
        )
    return Cohort(meta, templates, path.name)
