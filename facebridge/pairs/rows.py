"""What the pair store holds and answers, as values: a recorded pair, a set of pairs to fit
from, counts, a timeline, the retention rules. No database here."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from facebridge.pairs.migrations import (
    MAX_EMBEDDING_BYTES,
    MAX_SUBJECT_CHARS,
    Dialect,
)

SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PairRow:
    """One capture embedded by two models. `created_at` defaults to the time of `record`."""

    subject: str
    source_model: str
    source_sha256: str
    source_embedding: np.ndarray = field(repr=False)
    target_model: str
    target_sha256: str
    target_embedding: np.ndarray = field(repr=False)
    created_at: datetime | None = None

    def params(self, index: int, now: datetime, dialect: Dialect) -> tuple[Any, ...]:
        """The INSERT parameters, after checking every field (errors name the row)."""
        where = f"rows[{index}]"
        if not isinstance(self.subject, str) or not 1 <= len(self.subject) <= MAX_SUBJECT_CHARS:
            raise ValueError(f"{where}.subject must be a string of 1 to {MAX_SUBJECT_CHARS} characters")
        if not self.source_model or not self.target_model:
            raise ValueError(f"{where}: both model ids are required")
        if self.source_model == self.target_model:
            raise ValueError(f"{where}: source and target are the same model {self.source_model!r}")
        for name in ("source_sha256", "target_sha256"):
            if not SHA256.match(str(getattr(self, name))):
                raise ValueError(f"{where}.{name} must be 64 lowercase hex digits")
        moment = self.created_at or now
        if moment.tzinfo is None:
            raise ValueError(f"{where}.created_at must carry a time zone")
        return (
            self.subject,
            self.source_model,
            self.source_sha256,
            embedding_bytes(self.source_embedding, f"{where}.source_embedding"),
            self.target_model,
            self.target_sha256,
            embedding_bytes(self.target_embedding, f"{where}.target_embedding"),
            dialect.time_param(moment),
        )


def embedding_bytes(vector: np.ndarray | Sequence[float], where: str) -> bytes:
    """A template as little-endian float32 bytes; anything else than one finite vector is refused."""
    array = np.asarray(vector, dtype="<f4")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{where} must be one non-empty vector, got shape {list(array.shape)}")
    if array.nbytes > MAX_EMBEDDING_BYTES:
        limit = MAX_EMBEDDING_BYTES // 4
        raise ValueError(f"{where} has {array.size} values; a template has at most {limit}")
    if not np.isfinite(array).all():
        raise ValueError(f"{where} contains NaN or Inf")
    return array.tobytes()


@dataclass(frozen=True)
class PairSet:
    """Pairs of two models, oriented as asked; row i of `source` and `target` is one capture.

    With no rows both matrices have shape (0, 0) (the dimensions are unknown).
    """

    source_model: str
    target_model: str
    subjects: np.ndarray  # (n,) str
    source: np.ndarray  # (n, d_source) float32
    target: np.ndarray  # (n, d_target) float32
    source_sha256: np.ndarray  # (n,) str: the source weights of each row
    target_sha256: np.ndarray
    created_at: np.ndarray  # (n,) datetime64[us], UTC

    def __len__(self) -> int:
        return len(self.subjects)

    @property
    def hashes(self) -> set[tuple[str, str]]:
        """The (source, target) weight pairs present; one element unless a model's weights changed."""
        return set(zip(self.source_sha256.tolist(), self.target_sha256.tolist(), strict=True))


@dataclass(frozen=True)
class PairStats:
    """One model pair (ids in code-point order, whichever orientation the rows were recorded in)."""

    source_model: str
    target_model: str
    pairs: int
    subjects: int
    first: datetime
    last: datetime


@dataclass(frozen=True)
class PairTimelinePoint:
    """Pairs of one model pair recorded in one time bucket (its start, UTC)."""

    model_a: str
    model_b: str
    start: datetime
    pairs: int


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep rows at most `max_age_days` and at most `max_rows_per_pair` per model pair (0: no limit)."""

    max_age_days: float = 180.0
    max_rows_per_pair: int = 1_000_000
    interval_s: float = 60.0


@dataclass(frozen=True)
class RetentionResult:
    expired: int
    trimmed: int
