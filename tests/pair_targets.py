"""Where a pair store lives in tests: a fresh SQLite file or a fresh PostgreSQL database, with raw SQL
beside the store (what an operator's client would see) and the schema as the database reports it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from facebridge.pairs import PairStore

from .postgres_server import PostgresCluster

EXPECTED_COLUMNS = [
    "id", "subject", "source_model", "source_sha256", "source_embedding",
    "target_model", "target_sha256", "target_embedding", "created_at",
]  # fmt: skip


@dataclass
class Target:
    """Where a store lives: a fresh SQLite file or a fresh PostgreSQL database."""

    kind: str
    path: Path | None = None
    dsn: str | None = None
    cluster: PostgresCluster | None = None
    sqlite_sync: Literal["full", "normal"] = "full"

    def open(self, **kwargs: Any) -> PairStore:
        if self.dsn is not None:
            return PairStore.open(dsn=self.dsn, **kwargs)
        return PairStore.open(self.path, sqlite_sync=self.sqlite_sync, **kwargs)

    def env(self) -> dict[str, str]:
        if self.dsn is not None:
            return {"FACEBRIDGE_PAIRS_DSN": self.dsn}
        return {"FACEBRIDGE_PAIRS_DB": str(self.path), "FACEBRIDGE_PAIRS_SQLITE_SYNC": self.sqlite_sync}

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Raw SQL beside the store (what an operator's client would see)."""
        if self.dsn is not None:
            import psycopg

            with psycopg.connect(self.dsn, autocommit=True) as conn:
                cursor = conn.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else []
        with sqlite3.connect(str(self.path)) as lite:
            rows = lite.execute(sql, params).fetchall()
        lite.close()
        return rows

    def files(self) -> list[Path]:
        """Every file the data could be in (PostgreSQL: the whole cluster, WAL included)."""
        if self.cluster is not None:  # this database's own files, the shared catalog and the WAL
            self.cluster.checkpoint()
            [(oid,)] = self.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
            folders = [self.cluster.data / "base" / str(oid), self.cluster.data / "global"]
            folders.append(self.cluster.data / "pg_wal")
            return [p for folder in folders for p in folder.rglob("*") if p.is_file()]
        assert self.path is not None
        return [p for p in self.path.parent.glob(self.path.name + "*") if p.is_file()]


def make_target(kind: str, request: pytest.FixtureRequest, directory: Path) -> Target:
    """`sqlite`, `sqlite-normal` (synchronous=NORMAL) or `postgresql` (a fresh database)."""
    if kind == "sqlite":
        return Target("sqlite", path=directory / "pairs.db")
    if kind == "sqlite-normal":
        return Target("sqlite", path=directory / "pairs.db", sqlite_sync="normal")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return Target("postgresql", dsn=cluster.store_dsn(), cluster=cluster)


def schema_of(target: Target) -> tuple[list[str], list[tuple[str, str]]]:
    """The store's tables and the pairs table's (column, declared type), as the database reports them."""
    if target.kind == "sqlite":
        tables = [r[0] for r in target.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return tables, [(r[1], r[2].lower()) for r in target.execute("PRAGMA table_info(pairs)")]
    here = "table_schema = current_schema()"
    tables = [r[0] for r in target.execute(f"SELECT table_name FROM information_schema.tables WHERE {here}")]
    columns = target.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_name = 'pairs' AND {here} ORDER BY ordinal_position"
    )
    return tables, [(c, t) for c, t in columns]
