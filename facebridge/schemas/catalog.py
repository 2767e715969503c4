"""Answers of GET /models, GET /mappings and POST /admin/reload-mappings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from facebridge.mapping.mapfile import MapMetadata, SpaceCalibration, SpaceRef
from facebridge.schemas.calibration import ComparisonInForce


class ModelInfo(BaseModel):
    id: str
    kind: str
    state: str
    reason: str = ""
    file: str
    sha256: str | None
    file_sha256: str | None
    dim: int | None
    input_size: int | None
    layout: str | None
    color: str | None
    alignment: str | None
    providers: list[str]
    architecture: str
    license: str
    lfw_reference: float | None
    maps_from: list[str] = []
    maps_to: list[str] = []
    space_calibrated: bool = False


class ModelList(BaseModel):
    providers: list[str]
    models: list[ModelInfo]


class MapInfo(BaseModel):
    id: str
    file: str
    metadata: MapMetadata


class RefusedInfo(BaseModel):
    file: str
    reason: str


class MappingList(BaseModel):
    spaces: list[SpaceRef]
    space_calibrations: list[SpaceCalibration]
    maps: list[MapInfo]
    refused: list[RefusedInfo]
    in_force: list[ComparisonInForce] = Field(
        default_factory=list,
        description="what judges each comparison now: raw or AS-norm, shipped or deployment calibration "
        "(details and the drift watch: GET /calibration)",
    )


class ReloadRequest(BaseModel):
    """Optional body of POST /admin/reload-mappings."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(
        default=False, description="check the folder and report what would load, without swapping it in"
    )


class ReloadAnswer(BaseModel):
    maps: list[str]
    refused: list[str]
    applied: bool = Field(default=True, description="false for a dry run: the serving set is unchanged")
