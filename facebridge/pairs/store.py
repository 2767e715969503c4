"""The paired-template store: while model B is rolled out beside model A, each capture embedded by both
leaves one row, from which maps between the two spaces can later be fitted on the deployment's own
population.

A row holds an opaque subject id, both models' ids and weight hashes, both embeddings (float32 bytes)
and a UTC time: never a photo, a crop, a name or a box. Two back-ends sit behind one interface:

- SQLite (a file; WAL journal, `synchronous=FULL`, `secure_delete=ON`), the default;
- PostgreSQL (psycopg 3, the `postgres` extra) when a DSN is given.

Every write commits before `record` returns, so an answer sent after it names only durable rows.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import numpy as np

from facebridge.audit import FIELDS as AUDIT_FIELDS
from facebridge.pairs.migrations import (
    MAX_EMBEDDING_BYTES,
    MAX_SUBJECT_CHARS,
    MIGRATIONS,
    POSTGRESQL,
    SQLITE,
    Cursor,
    Dialect,
    Migration,
    PairStoreError,
    migrate,
)

if TYPE_CHECKING:
    from facebridge.config import Settings

log = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-f]{64}$")
COLUMNS = (
    "subject, source_model, source_sha256, source_embedding, "
    "target_model, target_sha256, target_embedding, created_at"
)
EITHER_ORIENTATION = "((source_model = ? AND target_model = ?) OR (source_model = ? AND target_model = ?))"
# the audit record's fields in facebridge.audit's order; its `time` is stored as created_at
AUDIT_COLUMNS = ("created_at", *AUDIT_FIELDS[1:])


# ---------------------------------------------------------------------------------------------- values
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


# ---------------------------------------------------------------------------------------------- back-ends
C = TypeVar("C")


class _Pool(Generic[C]):
    """At most `size` connections, each used by one thread at a time; broken ones are dropped."""

    def __init__(self, connect: Callable[[], C], usable: Callable[[C], bool], size: int) -> None:
        self._connect, self._usable = connect, usable
        self._idle: queue.LifoQueue[C] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._all: list[C] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[C]:
        if self._closed:
            raise PairStoreError("the pair store is closed")
        self._slots.acquire()
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
                with self._lock:
                    self._all.append(conn)
            try:
                yield conn
            finally:
                if self._usable(conn) and not self._closed:
                    self._idle.put(conn)
                else:
                    self._discard(conn)
        finally:
            self._slots.release()

    def _discard(self, conn: C) -> None:
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        with suppress(Exception):  # a broken connection may fail to close; it is gone either way
            conn.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()  # type: ignore[attr-defined]
            except Exception:
                log.warning("pair store: a connection failed to close", exc_info=True)


class Backend(ABC):
    """A database the store can talk to: transactions for writes, plain statements for reads."""

    dialect: Dialect
    where: str

    @abstractmethod
    def transaction(self, flush: bool = False) -> Any:
        """A context manager yielding a cursor; commits on exit, rolls back on an exception.

        `flush`: the COMMIT reaches the disk before it returns, whatever the back-end's sync setting
        (schema changes and erasure: an acknowledged erasure must not come back after a power cut).
        """

    @abstractmethod
    def reading(self) -> Any:
        """A context manager yielding a cursor for single-statement reads."""

    def after_erase(self) -> None:  # noqa: B027 (optional hook)
        """Back-end specific clean-up once rows are deleted (SQLite: overwrite the journal)."""

    @abstractmethod
    def close(self) -> None: ...


class SqliteBackend(Backend):
    """A SQLite file in WAL mode: readers never wait for the writer; `secure_delete` zeroes erased rows.

    `synchronous="full"` (the default) syncs the WAL at every COMMIT, so a returned write survives a
    power cut; "normal" leaves the sync to checkpoints: a returned write survives a crash of the process
    (it is in the file, in the OS cache) but the last ones may roll back after a power cut or OS crash.
    """

    dialect = SQLITE

    def __init__(
        self, path: Path, pool_size: int = 8, synchronous: Literal["full", "normal"] = "full"
    ) -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self.synchronous = synchronous.upper()
        self.path = Path(path).expanduser().resolve()
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # templates are personal data: readable by the service's user only
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._write_lock = threading.Lock()  # one writer per process; other processes: busy_timeout
        self._pool: _Pool[sqlite3.Connection] = _Pool(self._connect, lambda _: True, pool_size)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise PairStoreError(f"{self.path}: SQLite refused WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA secure_delete=ON")
        except Exception:
            conn.close()
            raise
        return conn

    @contextmanager
    def transaction(self, flush: bool = False) -> Iterator[Cursor]:
        with self._write_lock, self._pool.connection() as conn:
            relaxed = flush and self.synchronous != "FULL"
            if relaxed:
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn.cursor()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                if relaxed:
                    conn.execute(f"PRAGMA synchronous={self.synchronous}")

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        with self._pool.connection() as conn:
            yield conn.cursor()

    def after_erase(self) -> None:
        # erased rows were zeroed in the database pages; the WAL may still hold their old frames, so
        # copy it back and truncate it (a reader holding an old snapshot can delay this to a later erase)
        with self._pool.connection() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self._pool.close()


class PostgresBackend(Backend):
    """A PostgreSQL database through psycopg 3 (autocommit connections, explicit transactions)."""

    dialect = POSTGRESQL

    def __init__(self, dsn: str, pool_size: int = 8) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise PairStoreError(
                "FACEBRIDGE_PAIRS_DSN needs psycopg 3: pip install 'facebridge[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.dsn = dsn
        self.where = redact_dsn(dsn)
        self._pool: _Pool[Any] = _Pool(self._connect, lambda c: not (c.closed or c.broken), pool_size)

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self.dsn, autocommit=True)
        except self._psycopg.OperationalError as exc:
            raise PairStoreError(f"cannot connect to the pair store {self.where}: {exc}") from exc

    @contextmanager
    def transaction(self, flush: bool = False) -> Iterator[Cursor]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            if flush:  # even where the DSN or the role turned synchronous_commit off
                cursor.execute("SET LOCAL synchronous_commit = on")
            yield cursor

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        with self._pool.connection() as conn, conn.cursor() as cursor:
            yield cursor

    def close(self) -> None:
        self._pool.close()


def redact_dsn(dsn: str) -> str:
    """A DSN fit for logs: passwords replaced (URL and key=value forms)."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn, flags=re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- the store
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
