"""The paired-template store: while model B is rolled out beside model A, each capture embedded by both
leaves one row, from which maps between the two spaces can later be fitted on the deployment's own
population.

A row holds an opaque subject id, both models' ids and weight hashes, both embeddings (float32 bytes)
and a UTC time: never a photo, a crop, a name or a box. Two back-ends sit behind one interface
(facebridge/pairs/backends.py; the values it takes and gives: facebridge/pairs/rows.py):

- SQLite (a file; WAL journal, `synchronous=FULL`, `secure_delete=ON`), the default;
- PostgreSQL (psycopg 3, the `postgres` extra) when a DSN is given.

Every write commits before `record` returns, so an answer sent after it names only durable rows.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from facebridge.audit import FIELDS as AUDIT_FIELDS
from facebridge.pairs.backends import Backend, PostgresBackend, SqliteBackend
from facebridge.pairs.migrations import (
    MIGRATIONS,
    Migration,
    PairStoreError,
    migrate,
)
from facebridge.pairs.rows import (
    PairRow,
    PairSet,
    PairStats,
    PairTimelinePoint,
    RetentionPolicy,
    RetentionResult,
)

if TYPE_CHECKING:
    from facebridge.config import Settings

log = logging.getLogger(__name__)

COLUMNS = (
    "subject, source_model, source_sha256, source_embedding, "
    "target_model, target_sha256, target_embedding, created_at"
)
EITHER_ORIENTATION = "((source_model = ? AND target_model = ?) OR (source_model = ? AND target_model = ?))"
# the audit record's fields in facebridge.audit's order; its `time` is stored as created_at
AUDIT_COLUMNS = ("created_at", *AUDIT_FIELDS[1:])


class PairStore:
    """Record, read, erase and count template pairs; thread-safe.

    `record` commits before it returns. Retention runs once at open and then, in the background, after
    writes at most once per `retention.interval_s`.
    """

    def __init__(
        self,
        backend: Backend,
        retention: RetentionPolicy | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.backend = backend
        self.dialect = backend.dialect
        self.retention = retention
        with backend.transaction(flush=True) as cursor:
            before, after = migrate(cursor, self.dialect, migrations, backend.where)
        self.schema_version = after
        if before != after:
            log.info("pair store %s: schema version %d -> %d", backend.where, before, after)
        self._retention_lock = threading.Lock()
        self._retention_thread: threading.Thread | None = None
        self._last_retention = float("-inf")
        self.schedule_retention(force=True)

    @classmethod
    def open(
        cls,
        path: Path | str | None = None,
        *,
        dsn: str | None = None,
        retention: RetentionPolicy | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
        sqlite_sync: Literal["full", "normal"] = "full",
    ) -> PairStore:
        """A SQLite file at `path`, or PostgreSQL at `dsn` (exactly one of the two).

        `sqlite_sync`: see SqliteBackend; PostgreSQL follows the server's `synchronous_commit`.
        """
        if (path is None) == (dsn is None):
            raise ValueError("give exactly one of path (SQLite) or dsn (PostgreSQL)")
        backend: Backend
        if dsn is not None:
            backend = PostgresBackend(dsn)
        else:
            backend = SqliteBackend(Path(path or ""), synchronous=sqlite_sync)
        try:
            return cls(backend, retention, migrations)
        except BaseException:
            backend.close()
            raise

    @classmethod
    def from_settings(cls, settings: Settings) -> PairStore | None:
        """The store the settings configure, or None when recording is off (neither DB nor DSN set)."""
        if settings.pairs_dsn is None and settings.pairs_db is None:
            return None
        if settings.pairs_dsn is not None and settings.pairs_db is not None:
            log.warning("both FACEBRIDGE_PAIRS_DSN and FACEBRIDGE_PAIRS_DB are set: PostgreSQL is used")
        retention = RetentionPolicy(settings.pairs_retention_days, settings.pairs_max_rows)
        if settings.pairs_dsn is not None:
            store = cls.open(dsn=settings.pairs_dsn, retention=retention)
        else:
            store = cls.open(settings.pairs_db, retention=retention, sqlite_sync=settings.pairs_sqlite_sync)
        log.info(
            "pair store: %s %s, schema version %d, retention %s days / %s rows per model pair",
            store.dialect.name,
            store.backend.where,
            store.schema_version,
            settings.pairs_retention_days or "unlimited",
            settings.pairs_max_rows or "unlimited",
        )
        return store

    # ------------------------------------------------------------------------------------------ writes
    def record(self, rows: Sequence[PairRow]) -> int:
        """Insert `rows` in one transaction (all or none); returns how many, once they are committed."""
        if not rows:
            return 0
        now = datetime.now(UTC)
        params = [row.params(i, now, self.dialect) for i, row in enumerate(rows)]
        insert = self.dialect.sql(f"INSERT INTO pairs ({COLUMNS}) VALUES ({_marks(8)})")
        with self.backend.transaction() as cursor:
            cursor.executemany(insert, params)
        self.schedule_retention()
        return len(params)

    def erase(self, subject: str) -> int:
        """Delete every row of `subject` (every model pair, both orientations); returns how many."""
        with self.backend.transaction(flush=True) as cursor:
            cursor.execute(self.dialect.sql("DELETE FROM pairs WHERE subject = ?"), (subject,))
            deleted = max(cursor.rowcount, 0)
        if deleted:
            self.backend.after_erase()
        return deleted

    # ------------------------------------------------------------------------------------------ audit
    def append_audit(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Insert audit records (facebridge.audit: `time` a datetime, `counts` a dict) in one
        transaction; the table refuses UPDATE and DELETE."""
        if not records:
            return 0
        params = [
            (
                self.dialect.time_param(r["time"]),
                *(r.get(name) for name in AUDIT_COLUMNS[1:-4]),
                r.get("outcome"),
                json.dumps(r["counts"]) if r.get("counts") is not None else None,
                r.get("detail"),
                r.get("request_id"),
            )
            for r in records
        ]
        insert = f"INSERT INTO audit_log ({', '.join(AUDIT_COLUMNS)}) VALUES ({_marks(len(AUDIT_COLUMNS))})"
        with self.backend.transaction() as cursor:
            cursor.executemany(self.dialect.sql(insert), params)
        return len(params)

    def read_audit(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Audit records, oldest first (optionally from `since` on), as facebridge.audit writes them."""
        query = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log"
        params: tuple[Any, ...] = ()
        if since is not None:
            query += " WHERE created_at >= ?"
            params = (self.dialect.time_param(since),)
        with self.backend.reading() as cursor:
            cursor.execute(self.dialect.sql(query + " ORDER BY created_at, id"), params)
            rows = cursor.fetchall()
        records = []
        for row in rows:
            record = dict(zip(("time", *AUDIT_COLUMNS[1:]), row, strict=True))
            record["time"] = self.dialect.time_value(record["time"])
            record["counts"] = json.loads(record["counts"]) if record["counts"] else None
            records.append(record)
        return records

    # ------------------------------------------------------------------------------------------ reads
    def read(
        self,
        source_model: str,
        target_model: str,
        *,
        source_sha256: str | None = None,
        target_sha256: str | None = None,
    ) -> PairSet:
        """Every pair of the two models, oldest first, oriented source -> target whichever way each row
        was recorded; optionally only rows made by the given weights."""
        query = f"SELECT {COLUMNS} FROM pairs WHERE {EITHER_ORIENTATION} ORDER BY created_at, id"
        with self.backend.reading() as cursor:
            cursor.execute(self.dialect.sql(query), (source_model, target_model, target_model, source_model))
            rows = cursor.fetchall()
        subjects, src, tgt, src_sha, tgt_sha, times = [], [], [], [], [], []
        for subject, model_a, sha_a, emb_a, _model_b, sha_b, emb_b, created in rows:
            if model_a != source_model:  # recorded the other way round
                sha_a, emb_a, sha_b, emb_b = sha_b, emb_b, sha_a, emb_a
            if (source_sha256 and sha_a != source_sha256) or (target_sha256 and sha_b != target_sha256):
                continue
            subjects.append(subject)
            src.append(np.frombuffer(bytes(emb_a), dtype="<f4"))
            tgt.append(np.frombuffer(bytes(emb_b), dtype="<f4"))
            src_sha.append(sha_a)
            tgt_sha.append(sha_b)
            times.append(self.dialect.time_value(created).replace(tzinfo=None))
        return PairSet(
            source_model,
            target_model,
            np.asarray(subjects, dtype=str),
            _stack(src, source_model),
            _stack(tgt, target_model),
            np.asarray(src_sha, dtype=str),
            np.asarray(tgt_sha, dtype=str),
            np.asarray(times, dtype="datetime64[us]"),
        )

    def stats(self) -> list[PairStats]:
        """Per model pair: rows, distinct subjects, first and last time."""
        with self.backend.reading() as cursor:
            cursor.execute(
                "SELECT source_model, target_model, COUNT(*), MIN(created_at), MAX(created_at) "
                "FROM pairs GROUP BY source_model, target_model"
            )
            oriented = cursor.fetchall()
        merged: dict[tuple[str, str], tuple[int, datetime, datetime]] = {}
        for model_a, model_b, count, first, last in oriented:
            key = (min(model_a, model_b), max(model_a, model_b))
            first, last = self.dialect.time_value(first), self.dialect.time_value(last)
            if key in merged:
                n, f, la = merged[key]
                merged[key] = (n + int(count), min(f, first), max(la, last))
            else:
                merged[key] = (int(count), first, last)
        result = []
        for (model_a, model_b), (count, first, last) in sorted(merged.items()):
            query = f"SELECT COUNT(DISTINCT subject) FROM pairs WHERE {EITHER_ORIENTATION}"
            with self.backend.reading() as cursor:
                cursor.execute(self.dialect.sql(query), (model_a, model_b, model_b, model_a))
                subjects = int(cursor.fetchone()[0])
            result.append(PairStats(model_a, model_b, count, subjects, first, last))
        return result

    def timeline(self, bucket: Literal["day", "hour"] = "day") -> list[PairTimelinePoint]:
        """Pairs recorded per model pair (code-point order, both orientations together) per UTC day or
        hour, oldest first: how fast a roll-out is collecting pairs."""
        if bucket not in ("day", "hour"):
            raise ValueError(f"bucket must be day or hour, not {bucket!r}")
        if self.dialect.name == "sqlite":  # stored as fixed-width ISO text: a prefix is the bucket
            start = "substr(created_at, 1, 10)" if bucket == "day" else "substr(created_at, 1, 13)"
        else:
            start = f"date_trunc('{bucket}', created_at AT TIME ZONE 'UTC')"
        query = (
            f"SELECT source_model, target_model, {start} AS bucket, COUNT(*) FROM pairs "
            "GROUP BY source_model, target_model, bucket"
        )
        with self.backend.reading() as cursor:
            cursor.execute(query)
            rows = cursor.fetchall()
        merged: dict[tuple[str, str, datetime], int] = {}
        for model_a, model_b, raw, count in rows:
            if isinstance(raw, datetime):
                moment = raw.replace(tzinfo=UTC)
            else:
                text = str(raw)
                moment = datetime.strptime(text, "%Y-%m-%d" if len(text) == 10 else "%Y-%m-%dT%H")
                moment = moment.replace(tzinfo=UTC)
            key = (min(model_a, model_b), max(model_a, model_b), moment)
            merged[key] = merged.get(key, 0) + int(count)
        return [PairTimelinePoint(a, b, moment, count) for (a, b, moment), count in sorted(merged.items())]

    # ------------------------------------------------------------------------------------------ retention
    def apply_retention(self, max_age_days: float | None, max_rows_per_pair: int | None) -> RetentionResult:
        """Delete rows older than `max_age_days`, then the oldest beyond `max_rows_per_pair` per model
        pair (both orientations count together); None or 0 turns a limit off."""
        expired = trimmed = 0
        if max_age_days:
            cutoff = datetime.now(UTC) - timedelta(days=max_age_days)
            with self.backend.transaction() as cursor:
                cursor.execute(
                    self.dialect.sql("DELETE FROM pairs WHERE created_at < ?"),
                    (self.dialect.time_param(cutoff),),
                )
                expired = max(cursor.rowcount, 0)
        if max_rows_per_pair:
            with self.backend.reading() as cursor:
                cursor.execute("SELECT source_model, target_model, COUNT(*) FROM pairs GROUP BY 1, 2")
                counts: dict[tuple[str, str], int] = {}
                for model_a, model_b, count in cursor.fetchall():
                    key = (min(model_a, model_b), max(model_a, model_b))
                    counts[key] = counts.get(key, 0) + int(count)
            for (model_a, model_b), count in sorted(counts.items()):
                if count > max_rows_per_pair:
                    trimmed += self._trim(model_a, model_b, max_rows_per_pair)
        if expired or trimmed:
            log.info("pair store retention: %d row(s) expired, %d over the per-pair limit", expired, trimmed)
        return RetentionResult(expired, trimmed)

    def _trim(self, model_a: str, model_b: str, keep: int) -> int:
        both = (model_a, model_b, model_b, model_a)
        newest_first = f"SELECT created_at, id FROM pairs WHERE {EITHER_ORIENTATION} "
        newest_first += "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?"
        older = f"DELETE FROM pairs WHERE {EITHER_ORIENTATION} "
        older += "AND (created_at < ? OR (created_at = ? AND id < ?))"
        with self.backend.transaction() as cursor:
            cursor.execute(self.dialect.sql(newest_first), (*both, keep - 1))
            oldest_kept = cursor.fetchone()
            if oldest_kept is None:
                return 0
            created, row_id = oldest_kept
            cursor.execute(self.dialect.sql(older), (*both, created, created, row_id))
            return max(cursor.rowcount, 0)

    def schedule_retention(self, force: bool = False) -> bool:
        """Start retention in a background thread when due (at most once per interval); True if started."""
        policy = self.retention
        if policy is None or not (policy.max_age_days or policy.max_rows_per_pair):
            return False
        with self._retention_lock:
            now = time.monotonic()
            running = self._retention_thread is not None and self._retention_thread.is_alive()
            if running or (not force and now - self._last_retention < policy.interval_s):
                return False
            self._last_retention = now
            self._retention_thread = threading.Thread(
                target=self._run_retention, args=(policy,), name="facebridge-pairs-retention", daemon=True
            )
            self._retention_thread.start()
            return True

    def _run_retention(self, policy: RetentionPolicy) -> None:
        try:
            self.apply_retention(policy.max_age_days, policy.max_rows_per_pair)
        except Exception:  # retention must never take the service down; it is retried after a write
            log.exception("pair store retention failed")

    def wait_retention(self, timeout: float | None = None) -> None:
        """Block until a running retention pass has finished (tests, shutdown)."""
        thread = self._retention_thread
        if thread is not None:
            thread.join(timeout)

    def close(self) -> None:
        self.wait_retention(30.0)
        self.backend.close()


def open_store(where: Settings | str | Path, retention: RetentionPolicy | None = None) -> PairStore:
    """An existing store for tools (e.g. `facebridge refit`): the service's settings (with their
    retention), a postgresql:// (or key=value) DSN, or the path of a SQLite file that must exist."""
    if not isinstance(where, str | Path):
        store = PairStore.from_settings(where)
        if store is None:
            raise PairStoreError("no pair store configured: set FACEBRIDGE_PAIRS_DB or FACEBRIDGE_PAIRS_DSN")
        return store
    text = str(where)
    if isinstance(where, str) and (
        text.startswith(("postgresql://", "postgres://")) or re.search(r"\b(host|dbname)=", text)
    ):
        return PairStore.open(dsn=text, retention=retention)
    path = Path(text).expanduser()
    if not path.is_file():
        raise PairStoreError(f"no pair store at {path} (a SQLite file, or pass a postgresql:// DSN)")
    return PairStore.open(path, retention=retention)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _stack(vectors: list[np.ndarray], model: str) -> np.ndarray:
    if not vectors:
        return np.zeros((0, 0), np.float32)
    dims = {len(v) for v in vectors}
    if len(dims) > 1:
        raise PairStoreError(
            f"{model}: stored templates have dimensions {sorted(dims)} (its weights changed?); "
            "read with source_sha256/target_sha256 to pick one version"
        )
    return np.stack(vectors).astype(np.float32, copy=False)
