"""Paired templates recorded during a roll-out (opt-in): two models' embeddings of one capture, never the
photo. See docs/pairs.md."""

from facebridge.pairs.migrations import MIGRATIONS, Migration, PairStoreError, SchemaTooNew
from facebridge.pairs.rows import PairRow, PairSet, PairStats, RetentionPolicy, RetentionResult
from facebridge.pairs.store import PairStore

__all__ = [
    "MIGRATIONS",
    "Migration",
    "PairRow",
    "PairSet",
    "PairStats",
    "PairStore",
    "PairStoreError",
    "RetentionPolicy",
    "RetentionResult",
    "SchemaTooNew",
]
