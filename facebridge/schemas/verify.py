"""Request and response bodies of POST /verify (also what the library and the client return)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator
from pydantic.config import JsonDict

from facebridge.mapping.calibration import DEFAULT_OPERATING_POINT, OPERATING_POINTS, Interval

FAR_POINTS = {value: name for name, value in OPERATING_POINTS.items()}


class Side(BaseModel):
    """One face: a template (`embedding`) or a photo (`image`, base64) to embed, and its model."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["embedding"]}, {"required": ["image"]}]}
    )

    model: str
    embedding: list[StrictFloat] | None = None
    image: str | None = Field(default=None, description="base64 photo; its largest face is embedded")

    @model_validator(mode="after")
    def _one_of(self) -> Side:
        if (self.embedding is None) == (self.image is None):
            raise ValueError("give exactly one of 'embedding' or 'image'")
        return self


class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: Side
    b: Side


# a template of each of two shipped recognizers (values only illustrate the shape: 128 and 192 numbers)
_EXAMPLE_PAIR: JsonDict = {
    "a": {"model": "arcface-mbf128", "embedding": [0.088] * 128},
    "b": {"model": "sirius-mbf192", "embedding": [0.072] * 192},
}


class VerifyRequest(BaseModel):
    """One `pair` or a batch of `pairs`; the decision rule is `far`, `operating_point` or `threshold`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [{"required": ["pair"]}, {"required": ["pairs"]}],
            "examples": [
                {"pair": _EXAMPLE_PAIR, "far": 0.001},
                {"pairs": [_EXAMPLE_PAIR, _EXAMPLE_PAIR], "operating_point": "far_1e-4"},
            ],
        },
    )

    pair: Pair | None = None
    pairs: list[Pair] | None = Field(default=None, min_length=1)
    far: float | None = Field(
        default=None,
        description="calibrated operating point by FAR: 0.01, 0.001 or 0.0001",
        json_schema_extra={"enum": [0.01, 0.001, 0.0001]},
    )
    operating_point: Literal["far_1e-2", "far_1e-3", "far_1e-4", "max_accuracy"] | None = None
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0, description="raw cosine threshold")
    space: str | None = Field(default=None, description="compare in this model's space (default: best map)")
    normalization: Literal["auto", "none"] = Field(
        default="auto",
        description="auto: AS-normalise scores against the deployment's cohort when one serves the "
        "comparison and judge them with normalised thresholds; none: raw cosine and raw thresholds",
    )

    @model_validator(mode="after")
    def _check(self) -> VerifyRequest:
        if (self.pair is None) == (self.pairs is None):
            raise ValueError("give exactly one of 'pair' or 'pairs'")
        if self.far is not None and self.far not in FAR_POINTS:
            raise ValueError(f"far must be one of {sorted(FAR_POINTS)} (the calibrated operating points)")
        if sum(v is not None for v in (self.far, self.operating_point, self.threshold)) > 1:
            raise ValueError("give at most one of 'far', 'operating_point' or 'threshold'")
        return self

    def all_pairs(self) -> list[Pair]:
        return [self.pair] if self.pair is not None else list(self.pairs or [])

    def point(self) -> str:
        if self.far is not None:
            return FAR_POINTS[self.far]
        return self.operating_point or DEFAULT_OPERATING_POINT


class CalibrationData(BaseModel):
    """The data a calibrated threshold was measured on, to judge whether it fits the caller's faces."""

    dataset: str | None
    images: int | None
    identities: int | None
    genuine_pairs: int
    impostor_pairs: int
    method: str | None = Field(description="how the pairs were formed and scored")


class ThresholdAnswer(BaseModel):
    """A result's threshold and what is known about its error rates (null for a raw threshold)."""

    threshold: float
    operating_point: str = Field(description="far_1e-2 | far_1e-3 | far_1e-4 | max_accuracy | custom")
    far_at_threshold: float | None = Field(
        default=None, description="false accept rate measured at this threshold on calibration data"
    )
    tar_at_threshold: float | None = None
    far_interval: Interval | None = Field(
        default=None,
        description="Clopper-Pearson 95% interval of that FAR: sampling error of the calibration data only",
    )
    far_range: Interval | None = Field(
        default=None,
        description="FAR this threshold is expected to reach on another population (null: not studied)",
    )
    far_range_note: str | None = Field(default=None, description="where far_range comes from")
    calibration_data: CalibrationData | None = None


class CohortInfo(BaseModel):
    """A cohort one side of a comparison was measured against."""

    id: str
    model: str = Field(description="the space its templates were made in")
    size: int
    kind: str = Field(description="photos | npy | parquet | postgres | pair-store")
    source: str
    side: Literal["a", "b"] = Field(description="the side whose statistics it gave")
    via: list[str] = Field(description="maps it was carried through into the comparison space")
    top_k: int = Field(description="how many of a template's scores against this cohort were taken")


class ScoreNormalization(BaseModel):
    method: Literal["as-norm"] = "as-norm"
    top_k: int = Field(description="the most cohort scores per side (all of them without top_k_share)")
    top_k_share: float | None = Field(
        default=None, description="K as this share of each cohort's size (each cohort states its K)"
    )
    deviation_power: float = Field(
        default=1.0,
        description="each side divides by its top-K deviation raised to this power (1: plain AS-norm)",
    )
    blend: float = Field(
        default=1.0,
        description="the share of the AS-norm score in `normalized_score`, the rest the raw score "
        "standardised by the cohorts' own level: blend * s_norm + (1 - blend) * (s - level_mean) / "
        "level_std (1: plain AS-norm)",
    )
    level_mean: float | None = Field(
        default=None,
        description="the cohorts' own level: the mean top-K score of a cohort template against the "
        "other side's cohort, its own person left out (null when blend is 1)",
    )
    level_std: float | None = Field(default=None, description="the mean top-K deviation of the same")
    cohorts: list[CohortInfo]


class CalibrationInForce(BaseModel):
    """Which calibration judged the score, in which units, and why."""

    source: Literal["shipped", "deployment", "custom"]
    file: str | None = Field(description="the calibration set file (null: the map or space file's own)")
    units: Literal["cosine", "as-norm"]
    note: str


class VerifyResult(ThresholdAnswer):
    index: int
    score: float = Field(
        description="what the decision compares with `threshold`: `normalized_score` when the "
        "calibration's units are as-norm, else `raw_score`"
    )
    raw_score: float = Field(
        description="cosine similarity in `space`; `both-maps`: the mean of the cosines in both spaces, "
        "(A->B(a) . b + a . B->A(b)) / 2"
    )
    normalized_score: float | None = Field(
        description="AS-norm score against the cohort(s) in `normalization` (null: no cohort serves it)"
    )
    normalization: ScoreNormalization | None
    calibration: CalibrationInForce
    match: bool
    calibrated: bool = Field(description="false when a composed path borrows its last hop's calibration")
    comparison: Literal["same-space", "cross", "both-maps"] = Field(
        description="`cross`: the translated side mapped into `space`; `both-maps`: compared in both "
        "spaces through the two direct maps (`maps`), used across models when a calibration set has "
        "thresholds for it and the request names no `space` or `threshold`"
    )
    space: str
    translated: Literal["a", "b"] | None
    maps: list[str]


class VerifyResponse(BaseModel):
    results: list[VerifyResult]
