"""A map's evaluation sidecar (mappings/evaluations/SOURCE__TARGET.evaluation.json) and the answer of
GET /mappings/{source}/{target}/evaluation: score distributions and DET curves per population, native
(both sides embedded by the target model) and cross (translated source vs native target).

The file is written by scripts/map_evaluations.py from the embedding caches; the service only reads it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from facebridge.mapping.mapfile import SpaceRef

EVALUATION_FORMAT = 1
EVALUATION_SUFFIX = ".evaluation.json"
EVALUATIONS_FOLDER = "evaluations"


class Bins(BaseModel):
    """Equal-width cosine bins shared by every histogram of the file: edges low + k * (high - low) / count."""

    low: float
    high: float
    count: int = Field(gt=0)


class DetPoint(BaseModel):
    """One point of a DET curve: at `threshold`, the share of impostor pairs accepted (FMR) and of
    genuine pairs rejected (FNMR)."""

    threshold: float
    fmr: float
    fnmr: float


class ScoreSet(BaseModel):
    """Genuine and impostor scores of one comparison on one population, summarised."""

    genuine_pairs: int
    impostor_pairs: int
    genuine: list[int] = Field(description="histogram counts of genuine scores (Bins); outliers clipped")
    impostor: list[int] = Field(description="histogram counts of impostor scores (Bins); outliers clipped")
    det: list[DetPoint] = Field(description="thresholds descending: FMR rises, FNMR falls")
    eer: float = Field(description="equal error rate")
    tar_at_far: dict[str, float] = Field(description="TAR at FAR 1e-2 / 1e-3 / 1e-4 (far_1e-2 ...)")


class PopulationEvaluation(BaseModel):
    name: str = Field(description="the population (embedding cache name), e.g. lfw")
    in_fit: bool = Field(description="true when the map was fitted on photos of this population")
    images: int
    identities: int
    mean_cosine: float = Field(
        description="mean cosine between each photo's translated source template and its native target one"
    )
    native: ScoreSet = Field(description="both photos embedded by the target model")
    cross: ScoreSet = Field(description="translated source template vs native target template, both orders")


class MapEvaluation(BaseModel):
    format: int = EVALUATION_FORMAT
    map: str = Field(description="the map id, SOURCE->TARGET")
    source: SpaceRef
    target: SpaceRef
    tensor_sha256: str = Field(description="the map file's tensors this evaluation measured")
    created: str
    code_version: str
    method: str = Field(description="how pairs were formed and scored")
    bins: Bins
    populations: list[PopulationEvaluation]
    current: bool | None = Field(
        default=None,
        description="service answers only: true when the loaded map's tensors are the ones evaluated "
        "(false: the map was refitted since and these curves describe the earlier one)",
    )


def evaluation_filename(source: str, target: str) -> str:
    return f"{source}__{target}{EVALUATION_SUFFIX}"
