"""Calibration sets: thresholds for every comparison, raw and AS-normalised, from one set of people.

The shipped set (`mappings/calibrations/*.calibration.json`) holds thresholds in normalised units,
calibrated on every development population with its own cohort; a deployment set, written by
`facebridge calibrate` from the deployment's own labelled people, overrides it (raw and normalised)
for the comparisons it covers. Each entry is pinned to the weights it was measured with (a model's
sha256, a map's tensor sha256), so an entry made for other weights is never applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from facebridge import __version__
from facebridge.exceptions import FacebridgeError
from facebridge.mapping.calibration import Calibration

CALIBRATION_FORMAT = 1
CALIBRATION_SUFFIX = ".calibration.json"
SetKind = Literal["shipped", "deployment"]


class CalibrationSetError(FacebridgeError, ValueError):
    """A calibration file failed its checks; the message says which and why."""


class PopulationInfo(BaseModel):
    """One population a set was calibrated on."""

    name: str
    images: int
    identities: int
    cohort: str | None = Field(default=None, description="how its cohort was formed (normalised entries)")


class NormalizationInfo(BaseModel):
    method: Literal["as-norm"] = "as-norm"
    top_k: int = Field(
        gt=0,
        description="the most cohort scores per side that the mean and deviation are taken over "
        "(all of them are taken when top_k_share is unset)",
    )
    top_k_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="K as this share of each cohort's size, at least 10 and at most top_k; unset: K = top_k",
    )
    deviation_power: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="each side's top-K deviation is raised to this power before dividing by it; unset: "
        "1 (plain AS-norm, as sets written before it was recorded)",
    )
    blend: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="the share of the AS-norm score in a score blended with the cohort's own level, "
        "blend * s_norm + (1 - blend) * (s - M) / D (asnorm.blend); unset: 1, plain AS-norm",
    )
    cohort_sides: str = Field(
        default="each side against a cohort of the other side's kind (mapped vs native cohort)",
        description="which cohort each side of a comparison is measured against",
    )


class CalibrationEntry(BaseModel):
    """One comparison's thresholds: `raw` in cosine, `normalized` in AS-norm units."""

    comparison: str = Field(
        description="a space id (same-space), a map id 'A->B' (A mapped into B), or two map ids joined "
        "by '+' (compared through both maps)"
    )
    pins: dict[str, str] = Field(description="sha256 of each model's weights and of the map's tensors")
    raw: Calibration | None = None
    normalized: Calibration | None = None


class CalibrationSet(BaseModel):
    format: int = CALIBRATION_FORMAT
    kind: SetKind
    populations: list[PopulationInfo]
    normalization: NormalizationInfo | None = None
    entries: dict[str, CalibrationEntry]
    created: str
    code_version: str = __version__
    note: str | None = None

    @property
    def dataset(self) -> str:
        return "+".join(p.name for p in self.populations)


def save_calibration_set(path: Path, calibrations: CalibrationSet) -> Path:
    """Write atomically; a name without the suffix gets it, so the service will find the file."""
    if not path.name.endswith(CALIBRATION_SUFFIX):
        path = path.with_name(path.name.removesuffix(".json") + CALIBRATION_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(calibrations.model_dump_json(indent=1, exclude_none=True) + "\n")
    tmp.replace(path)
    return path


def load_calibration_set(path: Path) -> CalibrationSet:
    try:
        loaded = CalibrationSet.model_validate_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationSetError(f"{path.name}: {exc}") from exc
    if loaded.format != CALIBRATION_FORMAT:
        raise CalibrationSetError(
            f"{path.name}: format {loaded.format}, this version reads {CALIBRATION_FORMAT}"
        )
    for key, entry in loaded.entries.items():
        if key != entry.comparison:
            raise CalibrationSetError(f"{path.name}: entry {key!r} describes {entry.comparison!r}")
        if entry.normalized is not None and loaded.normalization is None:
            raise CalibrationSetError(f"{path.name}: {key} has normalised thresholds but no normalization")
    return loaded
