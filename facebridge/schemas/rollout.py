"""Answers of GET /migrations (in-place gallery migrations recorded in PostgreSQL) and GET /refits (the
refit history): what a roll-out from one model to another has done so far."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class MigrationBatch(BaseModel):
    batch: int
    pass_number: int = Field(
        description="the pass that wrote it (1: the keyset pass; later: catch-up passes)"
    )
    first_id: str | None
    last_id: str | None
    rows: int
    checksum: str = Field(description="sum of the 64-bit hashes of the translated values the batch wrote")
    written_at: datetime


class MigrationProblem(BaseModel):
    id: str = Field(description="the row's key")
    reason: str
    found_at: datetime


class MigrationJob(BaseModel):
    job: str = Field(description="TABLE.COLUMN->TO_COLUMN")
    state: str = Field(description="running | complete | incomplete | swapped")
    cursor: str | None = Field(description="the last key of the keyset pass (null: between passes or done)")
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    description: dict[str, Any] = Field(description="table, columns, source and target models, maps used")
    batches: int
    rows_written: int = Field(description="rows the job's batches hold now (rows rewritten later move on)")
    passes: int = Field(description="the highest pass number any batch was written in")
    checksum: str = Field(description="sum of every batch's checksum (what `migrate --verify` recomputes)")
    problems: int = Field(description="rows that could not be translated (left NULL)")
    recent_batches: list[MigrationBatch] = Field(description="the latest batches, newest first")
    problem_sample: list[MigrationProblem] = Field(description="the first problems found")


class MigrationsReport(BaseModel):
    configured: bool = Field(
        description="false: no database to read (set FACEBRIDGE_MIGRATIONS_DSN, or FACEBRIDGE_PAIRS_DSN)"
    )
    database: str | None = Field(description="where the job tables were read (password removed)")
    tables: bool = Field(description="false: the database holds no migration job tables yet")
    jobs: list[MigrationJob]
    note: str


class RefitScores(BaseModel):
    """A map's scores on the refit's held-out deployment subjects."""

    accuracy: float
    tar_far_1e3: float
    tar_far_1e4: float
    genuine_pairs: int
    impostor_pairs: int


class RefitRecord(BaseModel):
    at: datetime
    source: str
    target: str
    choice: str = Field(description="the refit chosen on validation subjects")
    method: str
    before: RefitScores | None = Field(description="the map in force then (null: there was none)")
    after: RefitScores
    improved: bool
    written: bool = Field(description="true when the refitted map was written into the mappings folder")
    file: str | None
    calibrated_on_deployment: bool
    split: dict[str, int] = Field(description="subjects and pairs in fit / validation / held-out")
    tensor_sha256: str | None = Field(default=None, description="the written map's tensors")


class RefitHistory(BaseModel):
    file: str = Field(description="the history file, relative to the mappings folder")
    refits: list[RefitRecord] = Field(description="newest first")
