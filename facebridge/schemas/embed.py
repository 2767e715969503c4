"""Request and response bodies of POST /embed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from facebridge.schemas.pairs import RecordOption


class EmbedOptions(BaseModel):
    """Options shared by the JSON and multipart forms."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = Field(
        default=None, min_length=1, description="recognizer ids; default: the service's default recognizer"
    )
    detector: str | None = Field(default=None, description="detector id (yunet, scrfd-500m, …)")
    aligned: bool = Field(default=False, description="images are already aligned crops: skip detection")
    largest_only: bool = Field(default=False, description="embed only the largest face of each image")
    max_faces: int | None = Field(
        default=None, ge=1, description="at most this many faces per image, largest first"
    )
    detection_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    normalize: bool = Field(default=True, description="L2-normalise embeddings (false: raw graph output)")
    mode: Literal["embedding", "full-network"] = Field(
        default="embedding",
        description="embedding: the recognizer's own output; full-network: every layer pooled, "
        "standardised with the model's stored statistics and discretised to -1/0/1",
    )
    crops: bool = Field(
        default=False,
        description="also return, per face and model, the aligned crop the model was fed (base64 PNG): "
        "to see what was compared (the operator console shows them)",
    )
    record: RecordOption | None = Field(
        default=None,
        description="service only: also store each image's pair of embeddings (exactly two models, one "
        "face per image: largest_only or aligned) under this opaque subject id in the pair store "
        "(docs/pairs.md); the photo is never stored. Multipart: form field record_subject",
    )

    @field_validator("record")
    @classmethod
    def _record_needs_one_pair(cls, record: RecordOption | None, info: ValidationInfo) -> RecordOption | None:
        """A recorded pair is one face seen by two models, as templates (declared last: sees the rest)."""
        if record is None:
            return record
        models = info.data.get("models") or []
        if len(models) != 2 or models[0] == models[1]:
            raise ValueError("record needs exactly two different models (models: [A, B])")
        if not (info.data.get("largest_only") or info.data.get("aligned")):
            raise ValueError("record needs one face per image: set largest_only (or send aligned crops)")
        if info.data.get("mode") != "embedding" or not info.data.get("normalize", True):
            raise ValueError("record stores normalised templates: mode embedding, normalize true")
        return record


class Base64Image(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = Field(
        description="base64 image bytes (JPEG, PNG, WebP, BMP…); a data: URL prefix is accepted"
    )


class EmbedJsonRequest(EmbedOptions):
    """Either `image` (one) or `images` (a batch)."""

    image: Base64Image | None = None
    images: list[Base64Image] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> EmbedJsonRequest:
        if (self.image is None) == (self.images is None):
            raise ValueError("give exactly one of 'image' or 'images'")
        return self

    def all_images(self) -> list[Base64Image]:
        return [self.image] if self.image is not None else list(self.images or [])


class Embedding(BaseModel):
    model: str
    sha256: str = Field(description="sha256 of the weights that produced this embedding")
    dim: int
    normalized: bool
    mode: str = Field(default="embedding", description="embedding or full-network")
    embedding: list[float]


class AlignedCrop(BaseModel):
    model: str = Field(description="the recognizer this crop was aligned for and fed to")
    alignment: str | None = Field(description="the manifest's alignment template")
    size: int = Field(description="width and height in pixels")
    png: str = Field(description="base64 PNG")


class Face(BaseModel):
    box: list[float] | None = Field(description="x1, y1, x2, y2 in image pixels; null for an aligned crop")
    landmarks: list[list[float]] | None = Field(description="5 points: eyes, nose, mouth corners")
    detection_score: float | None
    embeddings: list[Embedding]
    crops: list[AlignedCrop] | None = Field(
        default=None, description="with `crops: true` only: one aligned crop per model, in `models` order"
    )


class ImageResult(BaseModel):
    index: int
    width: int
    height: int
    faces: list[Face]


class DetectorInfo(BaseModel):
    id: str
    sha256: str | None


class EmbedResponse(BaseModel):
    detector: DetectorInfo | None
    results: list[ImageResult]
