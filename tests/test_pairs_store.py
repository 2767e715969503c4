"""The pair store on a real SQLite file and a real PostgreSQL server (started here, in a temp dir):
orientation, atomic batches, erasure, stats, concurrent writers, migrations and retention.

PostgreSQL 15 binaries (initdb, pg_ctl) are looked up on PATH and in /usr/lib/postgresql/*/bin. Without
them the PostgreSQL cases are skipped, unless FACEBRIDGE_REQUIRE_POSTGRES=1 (CI), which makes it a failure.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facebridge.config import Settings
from facebridge.pairs import (
    MIGRATIONS,
    Migration,
    PairRow,
    PairStore,
    PairStoreError,
    RetentionPolicy,
    SchemaTooNew,
)
from facebridge.pairs.backends import redact_dsn
from facebridge.pairs.migrations import latest_version
from facebridge.pairs.store import open_store

from .pair_targets import EXPECTED_COLUMNS, Target, make_target, schema_of
from .postgres_server import PostgresCluster

HASH_A, HASH_B, HASH_C = "a1" * 32, "b2" * 32, "c3" * 32
DIM_A, DIM_B, DIM_C = 8, 12, 6


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return make_target(request.param, request, tmp_path)


@pytest.fixture
def store(target: Target) -> Iterator[PairStore]:
    opened = target.open()
    yield opened
    opened.close()


def row(subject: str, forward: bool = True, seed: int = 0, **changes: Any) -> PairRow:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=DIM_A).astype(np.float32), rng.normal(size=DIM_B).astype(np.float32)
    made = PairRow(subject, "net-a", HASH_A, a, "net-b", HASH_B, b)
    if not forward:
        made = PairRow(subject, "net-b", HASH_B, b, "net-a", HASH_A, a)
    return replace(made, **changes)


def files_contain(files: list[Path], needle: bytes) -> bool:
    return any(needle in path.read_bytes() for path in files)


# ---------------------------------------------------------------------------------------------- basics
def test_pairs_come_back_oriented_as_asked(store: PairStore) -> None:
    rows = [row("s0", True, 0), row("s1", False, 1), row("s2", True, 2)]
    assert store.record(rows) == 3
    forward = store.read("net-a", "net-b")
    assert forward.subjects.tolist() == ["s0", "s1", "s2"]
    assert forward.source.shape == (3, DIM_A) and forward.target.shape == (3, DIM_B)
    assert forward.source.dtype == np.float32 and forward.target.dtype == np.float32
    for i, seed in enumerate([0, 1, 2]):  # exactly the float32 values recorded, whichever orientation
        expected = row("s", True, seed)
        np.testing.assert_array_equal(forward.source[i], expected.source_embedding)
        np.testing.assert_array_equal(forward.target[i], expected.target_embedding)
    assert forward.hashes == {(HASH_A, HASH_B)}
    assert forward.created_at.dtype == np.dtype("datetime64[us]")
    backward = store.read("net-b", "net-a")
    np.testing.assert_array_equal(backward.source, forward.target)
    np.testing.assert_array_equal(backward.target, forward.source)
    assert backward.hashes == {(HASH_B, HASH_A)}
    assert len(store.read("net-a", "net-c")) == 0 and store.read("net-a", "net-c").source.shape == (0, 0)


def test_weights_filter_and_changed_dimensions(store: PairStore) -> None:
    other = "d4" * 32
    store.record([row("s0"), row("s1", source_sha256=other, source_embedding=np.ones(16, np.float32))])
    with pytest.raises(PairStoreError, match="dimensions"):
        store.read("net-a", "net-b")
    only = store.read("net-a", "net-b", source_sha256=HASH_A)
    assert only.subjects.tolist() == ["s0"] and only.source.shape == (1, DIM_A)
    assert store.read("net-b", "net-a", target_sha256=other).target.shape == (1, 16)


def test_a_batch_is_all_or_nothing(store: PairStore, target: Target) -> None:
    with pytest.raises(ValueError, match=r"rows\[1\]\.source_sha256"):
        store.record([row("ok"), row("bad", source_sha256="not-a-hash")])
    with pytest.raises(ValueError, match=r"rows\[0\].*NaN"):
        store.record([row("nan", source_embedding=np.full(DIM_A, np.nan, np.float32))])

    class Unchecked(PairRow):
        """A row that skips the Python checks: the database's own CHECKs must still refuse it."""

        def params(self, index: int, now: datetime, dialect: Any) -> tuple[Any, ...]:
            return (self.subject, "net-a", HASH_A, b"\0" * 70_000, "net-b", HASH_B, b"\0" * 48,
                    dialect.time_param(now))  # fmt: skip

    with pytest.raises(Exception) as raised:  # sqlite3 or psycopg IntegrityError
        store.record([row("first"), Unchecked(**row("photo-sized").__dict__)])
    assert "check" in str(raised.value).lower() or "constraint" in str(raised.value).lower()
    assert store.stats() == [] and target.execute("SELECT COUNT(*) FROM pairs") == [(0,)]


def test_erasure_removes_a_subject_everywhere(store: PairStore, target: Target) -> None:
    victim = row("victim", True, 7)
    store.record([victim, row("victim", False, 8), row("keep", True, 9)])
    store.record([PairRow("victim", "net-c", HASH_C, np.ones(DIM_C), "net-a", HASH_A, np.ones(DIM_A))])
    before = {(s.source_model, s.target_model): s for s in store.stats()}
    assert before[("net-a", "net-b")].pairs == 3 and before[("net-a", "net-b")].subjects == 2
    assert before[("net-a", "net-c")].pairs == 1
    assert store.erase("victim") == 3
    assert store.erase("victim") == 0
    after = {(s.source_model, s.target_model): s for s in store.stats()}
    assert list(after) == [("net-a", "net-b")] and after[("net-a", "net-b")].pairs == 1
    assert after[("net-a", "net-b")].subjects == 1
    assert store.read("net-b", "net-a").subjects.tolist() == ["keep"]
    assert target.execute("SELECT COUNT(*) FROM pairs WHERE subject = ?", ("victim",)) == [(0,)]
    if target.kind == "sqlite":  # secure_delete + WAL checkpoint: the erased bytes are gone from disk
        assert not files_contain(target.files(), victim.source_embedding.astype("<f4").tobytes())
        assert files_contain(target.files(), row("keep", True, 9).source_embedding.astype("<f4").tobytes())


def test_stats_per_model_pair(store: PairStore) -> None:
    early = datetime(2030, 1, 1, tzinfo=UTC)
    store.record([row("s0", created_at=early), row("s0", False, created_at=early + timedelta(hours=1))])
    store.record([row("s1", created_at=early + timedelta(days=2))])
    [stats] = store.stats()
    assert (stats.source_model, stats.target_model, stats.pairs, stats.subjects) == ("net-a", "net-b", 3, 2)
    assert stats.first == early and stats.last == early + timedelta(days=2)


def test_timeline_per_model_pair_by_day_and_hour(store: PairStore) -> None:
    early = datetime(2030, 1, 1, 22, 30, tzinfo=UTC)
    store.record([row("s0", created_at=early), row("s0", False, created_at=early + timedelta(minutes=20))])
    store.record([row("s1", created_at=early + timedelta(hours=2))])  # the next day, both orientations merged
    days = [(p.model_a, p.model_b, p.start, p.pairs) for p in store.timeline("day")]
    assert days == [
        ("net-a", "net-b", datetime(2030, 1, 1, tzinfo=UTC), 2),
        ("net-a", "net-b", datetime(2030, 1, 2, tzinfo=UTC), 1),
    ]
    hours = [(p.start, p.pairs) for p in store.timeline("hour")]
    assert hours == [(datetime(2030, 1, 1, 22, tzinfo=UTC), 2), (datetime(2030, 1, 2, 0, tzinfo=UTC), 1)]
    with pytest.raises(ValueError):
        store.timeline("week")  # type: ignore[arg-type]


def test_concurrent_writers_lose_no_row(store: PairStore) -> None:
    def writer(thread: int) -> None:
        for i in range(50):
            store.record([row(f"t{thread}-{i}", bool(i % 2), i)])

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    subjects = store.read("net-a", "net-b").subjects.tolist()
    assert sorted(subjects) == sorted(f"t{t}-{i}" for t in range(8) for i in range(50))


def test_schema_is_only_the_expected_columns(store: PairStore, target: Target) -> None:
    tables, columns = schema_of(target)
    assert sorted(tables) == ["audit_log", "pairs", "schema_version"]
    assert [c for c, _ in columns] == EXPECTED_COLUMNS
    blob = "blob" if target.kind == "sqlite" else "bytea"
    assert [c for c, t in columns if t == blob] == ["source_embedding", "target_embedding"]


# ---------------------------------------------------------------------------------------------- migrations
def test_fresh_store_gets_the_latest_schema_and_reopening_changes_nothing(target: Target) -> None:
    target.open().close()
    versions = target.execute("SELECT version, name, applied_at FROM schema_version ORDER BY version")
    assert [v[0] for v in versions] == list(range(1, latest_version() + 1))
    reopened = target.open()
    assert reopened.schema_version == latest_version()
    reopened.close()
    assert target.execute("SELECT version, name, applied_at FROM schema_version ORDER BY version") == versions


def test_older_schema_is_migrated_step_by_step(target: Target) -> None:
    first = target.open()
    first.record([row("s0")])
    first.close()
    latest = latest_version()
    step = Migration(latest + 1, "a test column", ("ALTER TABLE pairs ADD COLUMN note TEXT",))
    upgraded = target.open(migrations=(*MIGRATIONS, step))
    assert upgraded.schema_version == latest + 1
    assert upgraded.read("net-a", "net-b").subjects.tolist() == ["s0"]  # data kept across the step
    upgraded.close()
    versions = [r[0] for r in target.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, latest + 2))
    with pytest.raises(ValueError, match="numbered"):
        target.open(migrations=(*MIGRATIONS, replace(step, version=latest + 2)))


def test_newer_schema_is_refused_and_left_untouched(target: Target) -> None:
    target.open().close()
    target.execute(
        "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
        (
            99,
            "from the future",
            "2099-01-01T00:00:00.000000Z" if target.kind == "sqlite" else datetime.now(UTC),
        ),
    )
    with pytest.raises(SchemaTooNew, match=r"schema version 99, newer than this facebridge knows"):
        target.open()
    assert target.execute("SELECT MAX(version) FROM schema_version") == [(99,)]


def test_a_version_1_store_gets_an_append_only_audit_log(target: Target) -> None:
    first = target.open(migrations=MIGRATIONS[:1])
    first.record([row("s0")])
    first.close()
    store = target.open()
    assert store.schema_version == latest_version() >= 2
    assert store.read("net-a", "net-b").subjects.tolist() == ["s0"]  # data kept across the step
    now = datetime.now(UTC).replace(microsecond=123000)
    records: list[dict[str, Any]] = [
        {"time": now - timedelta(hours=2), "key_id": "3f9a1c2e", "action": "pairs.erase", "route": "/pairs",
         "method": "DELETE", "subject": "s0", "outcome": "ok", "counts": {"deleted": 1}},
        {"time": now, "key_id": None, "action": "auth.unauthorized", "route": "/verify", "method": "POST",
         "outcome": "missing", "detail": "send an API key"},
    ]  # fmt: skip
    assert store.append_audit(records) == 2
    stored = store.read_audit()
    assert [(r["action"], r["key_id"], r["subject"], r["counts"]) for r in stored] == [
        ("pairs.erase", "3f9a1c2e", "s0", {"deleted": 1}),
        ("auth.unauthorized", None, None, None),
    ]
    assert stored[1]["time"] == now and stored[1]["detail"] == "send an API key"
    assert [r["action"] for r in store.read_audit(since=now - timedelta(hours=1))] == ["auth.unauthorized"]
    store.apply_retention(max_age_days=0.001, max_rows_per_pair=1)  # retention leaves the trail alone
    store.close()
    for statement in ("UPDATE audit_log SET outcome = 'changed'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            target.execute(statement)
    assert len(target.execute("SELECT id FROM audit_log")) == 2


# ---------------------------------------------------------------------------------------------- retention
def test_retention_by_age_and_by_rows_per_model_pair(store: PairStore) -> None:
    now = datetime.now(UTC)
    old = [row(f"old{i}", bool(i % 2), i, created_at=now - timedelta(days=200 + i)) for i in range(3)]
    recent = [row(f"new{i}", bool(i % 2), i, created_at=now - timedelta(minutes=10 - i)) for i in range(6)]
    other_pair = [PairRow("c", "net-c", HASH_C, np.ones(DIM_C), "net-a", HASH_A, np.ones(DIM_A))]
    store.record(old + recent + other_pair)
    result = store.apply_retention(max_age_days=180, max_rows_per_pair=None)
    assert (result.expired, result.trimmed) == (3, 0)
    result = store.apply_retention(max_age_days=180, max_rows_per_pair=4)  # both orientations together
    assert (result.expired, result.trimmed) == (0, 2)
    assert store.read("net-a", "net-b").subjects.tolist() == ["new2", "new3", "new4", "new5"]
    assert store.read("net-a", "net-c").subjects.tolist() == ["c"]  # another pair, under its cap
    assert store.apply_retention(None, None) == store.apply_retention(0, 0)


def test_retention_runs_at_open_and_after_writes_at_most_once_per_interval(target: Target) -> None:
    now = datetime.now(UTC)
    plain = target.open()
    plain.record([row(f"old{i}", created_at=now - timedelta(days=400)) for i in range(3)])
    plain.close()
    store = target.open(retention=RetentionPolicy(max_age_days=365, max_rows_per_pair=0, interval_s=3600))
    store.wait_retention(30)
    assert len(store.read("net-a", "net-b")) == 0  # applied at open
    store.record([row("late", created_at=now - timedelta(days=400))])
    assert store.schedule_retention() is False  # not due: the interval has not passed
    store.wait_retention(30)
    assert store.read("net-a", "net-b").subjects.tolist() == ["late"]
    store.close()
    eager = target.open(retention=RetentionPolicy(max_age_days=365, max_rows_per_pair=0, interval_s=0))
    eager.wait_retention(30)
    eager.record([row("late2", created_at=now - timedelta(days=400)), row("fresh")])
    eager.wait_retention(30)  # the write started a pass
    assert eager.read("net-a", "net-b").subjects.tolist() == ["fresh"]
    eager.close()


# ---------------------------------------------------------------------------------------------- opening
def test_open_store_for_tools(tmp_path: Path) -> None:
    with pytest.raises(PairStoreError, match="no pair store configured"):
        open_store(Settings(models_dir=tmp_path))
    with pytest.raises(PairStoreError, match="no pair store at"):
        open_store(str(tmp_path / "missing.db"))
    made = PairStore.open(tmp_path / "p.db")
    made.record([row("s0")])
    made.close()
    for where in (str(tmp_path / "p.db"), Settings(models_dir=tmp_path, pairs_db=tmp_path / "p.db")):
        reopened = open_store(where)
        assert reopened.read("net-b", "net-a").subjects.tolist() == ["s0"]
        reopened.close()
    assert oct((tmp_path / "p.db").stat().st_mode & 0o777) == "0o600"  # personal data: owner only
    with pytest.raises(PairStoreError, match="cannot connect"):
        open_store("postgresql://nobody:secret@127.0.0.1:1/none")
    assert redact_dsn("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert redact_dsn("host=h password=secret dbname=x") == "host=h password=*** dbname=x"
    with pytest.raises(ValueError, match="exactly one"):
        PairStore.open()


def test_sqlite_sync_setting_and_erasure_always_synced(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path, pairs_db=tmp_path / "p.db", pairs_sqlite_sync="normal")
    store = PairStore.from_settings(settings)
    assert store is not None
    backend = store.backend

    def synchronous() -> int:
        with backend.reading() as cursor:
            cursor.execute("PRAGMA synchronous")
            return int(cursor.fetchone()[0])

    assert synchronous() == 1  # NORMAL
    store.record([row("s0"), row("s1")])
    with backend.transaction(flush=True) as cursor:
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 2  # FULL for this transaction (erasure, migrations)
    assert store.erase("s0") == 1 and synchronous() == 1  # back to NORMAL afterwards
    store.close()
    with pytest.raises(ValueError, match="synchronous"):
        PairStore.open(tmp_path / "x.db", sqlite_sync="sometimes")  # type: ignore[arg-type]
    default = PairStore.open(tmp_path / "y.db")
    assert default.backend.synchronous == "FULL"  # type: ignore[attr-defined]
    default.close()


def test_postgres_erasure_is_flushed_even_with_synchronous_commit_off(postgres: PostgresCluster) -> None:
    store = PairStore.open(dsn=postgres.store_dsn("-c synchronous_commit=off"))
    with store.backend.transaction() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "off"  # the operator's choice for recording
    with store.backend.transaction(flush=True) as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"  # erasure and migrations
    store.close()


def test_postgres_store_opens_from_settings(postgres: PostgresCluster) -> None:
    dsn = postgres.store_dsn()
    store = PairStore.from_settings(Settings(pairs_dsn=dsn, pairs_retention_days=30, pairs_max_rows=10))
    assert store is not None and store.dialect.name == "postgresql"
    assert store.retention == RetentionPolicy(30, 10)
    store.close()
