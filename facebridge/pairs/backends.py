"""The two databases behind the pair store, one interface: SQLite (a file; WAL journal,
`synchronous=FULL`, `secure_delete=ON`) and PostgreSQL (psycopg 3, the `postgres` extra), each with a
small pool of connections."""

from __future__ import annotations

import logging
import os
import queue
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from facebridge.pairs.migrations import (
    POSTGRESQL,
    SQLITE,
    Cursor,
    Dialect,
    PairStoreError,
)

log = logging.getLogger(__name__)


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
