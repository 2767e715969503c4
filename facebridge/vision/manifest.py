"""The model manifest: what each ONNX file is and how to feed it.

Everything the pipeline needs to know about a model lives here rather than in code, so that adding a
recognizer is a manifest edit, and every answer can name the exact weights (by sha256) that produced it.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AlignmentTemplate(BaseModel):
    """Five reference landmark positions in a square crop of `size` pixels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(gt=0)
    points: list[tuple[float, float]] = Field(min_length=5, max_length=5)
    note: str = ""


class ModelSource(BaseModel):
    """Where a model file can be had: a URL (optionally a member of a zip archive), or only a note."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    member: str | None = None
    note: str = ""


class ModelEntry(BaseModel):
    """One ONNX file: a recognizer (with its preprocessing) or a detector (with its engine)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    kind: Literal["recognizer", "detector"]
    file: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    architecture: str = ""
    license: str = ""
    source: ModelSource = ModelSource()
    # recognizer fields
    dim: int | None = Field(default=None, gt=0)
    input_name: str | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    size: int | None = Field(default=None, gt=0)
    color: Literal["RGB", "BGR"] = "RGB"
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)
    output: str | None = None
    output_index: int | None = Field(default=None, ge=0)
    batch: Literal["dynamic", "fixed"] = "dynamic"
    alignment: str | None = None
    lfw_reference: float | None = None
    # detector fields
    engine: Literal["yunet", "scrfd"] | None = None

    @model_validator(mode="after")
    def _check_kind_fields(self) -> ModelEntry:
        if self.kind == "recognizer":
            missing = [n for n in ("dim", "size", "alignment") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"recognizer {self.id!r} lacks {', '.join(missing)}")
            if self.output is None and self.output_index is None:
                raise ValueError(f"recognizer {self.id!r} names neither output nor output_index")
        elif self.engine is None:
            raise ValueError(f"detector {self.id!r} lacks engine")
        return self


class Manifest(BaseModel):
    """All known models and alignment templates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    templates: dict[str, AlignmentTemplate]
    models: list[ModelEntry]

    @model_validator(mode="after")
    def _check_references(self) -> Manifest:
        ids = [m.id for m in self.models]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate model ids: {', '.join(duplicates)}")
        for entry in self.models:
            if entry.alignment is not None and entry.alignment not in self.templates:
                raise ValueError(f"model {entry.id!r} names unknown template {entry.alignment!r}")
            if entry.kind == "recognizer":
                template = self.templates[entry.alignment or ""]
                if template.size != entry.size:
                    raise ValueError(
                        f"model {entry.id!r}: size {entry.size} != template size {template.size}"
                    )
        return self

    def get(self, model_id: str) -> ModelEntry | None:
        return next((m for m in self.models if m.id == model_id), None)

    def of_kind(self, kind: str) -> list[ModelEntry]:
        return [m for m in self.models if m.kind == kind]


def load_manifest(path: Path) -> Manifest:
    """Parse and validate a TOML manifest; errors name the offending entry."""
    with path.open("rb") as handle:
        return Manifest.model_validate(tomllib.load(handle))


def overlay_manifest(base: Manifest, user_path: Path) -> Manifest:
    """`base` with a user manifest's models (and templates, if any) added.

    A user entry replaces a base entry of its id; user entries may name the base's templates, so the
    overlay is validated as a whole, not on its own.
    """
    with user_path.open("rb") as handle:
        user = tomllib.load(handle)
    user_models = user.get("models", [])
    replaced = {m.get("id") for m in user_models}
    models = [m.model_dump(exclude_none=True) for m in base.models if m.id not in replaced] + user_models
    templates = {k: v.model_dump() for k, v in base.templates.items()} | user.get("templates", {})
    try:
        return Manifest.model_validate({"templates": templates, "models": models})
    except ValueError as error:
        raise ValueError(f"{user_path}: {error}") from error


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large weights do not need to fit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
