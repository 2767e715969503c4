"""Request and response bodies of /pairs (the paired-template store) and the `record` option of /embed."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SUBJECT_PATTERN = r"^[A-Za-z0-9._:@/+=-]{1,128}$"
SUBJECT_DESCRIPTION = (
    "opaque subject id (a pseudonym such as a UUID or a keyed hash, never a name): letters, digits and "
    "._:@/+=- up to 128 characters; erasure (DELETE /pairs?subject=) finds rows by it"
)


class RecordOption(BaseModel):
    """Store the two embeddings of each image's face under `subject` (POST /embed)."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(pattern=SUBJECT_PATTERN, description=SUBJECT_DESCRIPTION)


class PairTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model id known to the service (manifest or mapping bank)")
    embedding: list[float] = Field(min_length=1, description="the template, as that model produced it")


class PairIn(BaseModel):
    """One capture embedded by two models."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(pattern=SUBJECT_PATTERN, description=SUBJECT_DESCRIPTION)
    a: PairTemplate
    b: PairTemplate


class PairsRequest(BaseModel):
    """Templates computed by the client; the service records them with the manifest's weight hashes."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "pairs": [
                        {
                            "subject": "7f3c9a1e-5d2b-4c8e-9f10-2a6b4d8e0c11",
                            # values only illustrate the shape: 128 and 192 numbers
                            "a": {"model": "arcface-mbf128", "embedding": [0.088] * 128},
                            "b": {"model": "sirius-mbf192", "embedding": [0.072] * 192},
                        }
                    ]
                }
            ]
        },
    )

    pairs: list[PairIn] = Field(min_length=1)


class PairsRecorded(BaseModel):
    recorded: int = Field(description="rows committed (durable) before this answer was sent")


class PairsDeleted(BaseModel):
    deleted: int = Field(description="rows of the subject removed, across every model pair")


class PairStatsEntry(BaseModel):
    source_model: str = Field(description="the pair's first model id (code-point order)")
    target_model: str
    pairs: int
    subjects: int = Field(description="distinct subject ids")
    first: datetime
    last: datetime


class PairStatsResponse(BaseModel):
    backend: Literal["sqlite", "postgresql"]
    schema_version: int
    retention_days: float | None = Field(description="pairs older than this are dropped (null: kept)")
    max_rows_per_pair: int | None = Field(description="oldest pairs beyond this are dropped (null: no cap)")
    model_pairs: list[PairStatsEntry]


class PairTimelineBucket(BaseModel):
    start: datetime = Field(description="the bucket's start (UTC)")
    pairs: int


class PairTimelineEntry(BaseModel):
    source_model: str = Field(description="the pair's first model id (code-point order)")
    target_model: str
    buckets: list[PairTimelineBucket] = Field(description="oldest first; buckets without pairs are left out")


class PairTimelineResponse(BaseModel):
    bucket: Literal["day", "hour"]
    model_pairs: list[PairTimelineEntry]
