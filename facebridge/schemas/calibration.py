"""Answer of GET /calibration: the calibrations and cohorts in force, and how the shipped thresholds
fare on the deployment's population (the drift watch)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from facebridge.cohort.calibration_set import NormalizationInfo, PopulationInfo
from facebridge.cohort.cohortfile import CohortProvenance
from facebridge.mapping.calibration import Interval
from facebridge.mapping.mapfile import SpaceRef


class CalibrationSetInfo(BaseModel):
    file: str
    kind: Literal["shipped", "deployment"]
    populations: list[PopulationInfo]
    normalization: NormalizationInfo | None
    comparisons: int
    created: str


class CohortSummary(BaseModel):
    id: str
    file: str
    space: SpaceRef
    provenance: CohortProvenance


class ComparisonInForce(BaseModel):
    """What judges a comparison's scores right now."""

    comparison: str = Field(description="a space id (same-space) or a map id 'A->B'")
    units: Literal["cosine", "as-norm"]
    source: Literal["shipped", "deployment"]
    file: str | None = Field(description="calibration set file (null: the map or space file's own)")
    cohorts: list[str]
    note: str


class DriftInfo(BaseModel):
    """The FAR a shipped raw threshold is estimated to reach on the cohort's population."""

    comparison: str
    operating_point: str
    nominal_far: float
    threshold: float = Field(description="the shipped raw cosine threshold")
    estimated_far: float
    interval: Interval = Field(description="Clopper-Pearson 95% over the cohort pairs")
    ratio: float = Field(description="estimated / nominal FAR")
    off: bool = Field(description="more than 2x off the nominal FAR, either way")
    pairs: int
    cohorts: list[str]


class CalibrationReport(BaseModel):
    calibration_sets: list[CalibrationSetInfo]
    cohorts: list[CohortSummary]
    comparisons: list[ComparisonInForce]
    drift: list[DriftInfo]
    drift_method: str = Field(
        default="cohort pairs counted as impostor pairs; runs high when a cohort holds several photos "
        "of one person (docs/thresholds.md)"
    )
    refused: list[str] = Field(description="cohort and calibration files refused, with the reason")


class DriftPoint(BaseModel):
    """One estimate of a snapshot (the fields of DriftInfo that change over time)."""

    comparison: str
    operating_point: str
    nominal_far: float
    threshold: float
    estimated_far: float
    interval: Interval
    ratio: float
    off: bool
    pairs: int


class DriftSnapshotInfo(BaseModel):
    at: datetime = Field(description="when the maps and cohorts were (re)loaded")
    event: Literal["start", "reload"]
    maps: int
    cohorts: list[str]
    estimates: list[DriftPoint]


class CalibrationHistory(BaseModel):
    """The drift watch at each load and reload since the process started, oldest first."""

    kept: int = Field(description="at most this many snapshots are kept (the oldest are dropped)")
    snapshots: list[DriftSnapshotInfo]
    note: str = Field(
        default="kept in memory: a restart starts a new history; facebridge_estimated_far is the "
        "gauge to keep in a monitoring system"
    )
