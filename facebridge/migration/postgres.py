"""Migration of a PostgreSQL gallery, staged: translations collected in a side table, swapped in at once.

The default design (`--design staged`; the in-place one is pg_inplace.py, docs/migration.md compares
them). The live table is not written until the swap: its source column and its rows stay as they are
(the migration only adds the empty target columns, a catalogue change). The translations go to an
unlogged side table in the table's schema, `facebridge_side_<12 hex digits>` (named in the job's
description), one row per key:

- `id`: the key; `value`: the translated template, of the source column's kind (`real[]`,
  `double precision[]`, `vector(n)`, `bytea`) unless told otherwise; `confidence` (`real`): each row's
  expected cosine with the target model's own embedding, when every map of the path carries a predictor;
- `row_version` (`xid`): the source row's version (xmin) when it was read. Any write to the row gives
  it a new xmin, and the migration never writes the table, so a row is *current* exactly when its side
  row's version equals its xmin: the passes after the first and the checks find changed rows by a join
  on the key, without reading (and detoasting) a single source. A changed row is translated again; if
  its translation comes out with the very bits its side row holds (a write to another column), the side
  row is only marked current, not counted as translated. A row's translation does not depend on its
  batch (see `_translate`), so the comparison is exact;
- `batch` (`integer`): the batch that wrote it, for the checksums.

**Work.** The key space is cut into parts (one per worker; their bounds and cursors in
`facebridge_migration_parts`), each walked in windows of `batch_rows` keys (keyset pagination, `WHERE
id > last ORDER BY id`) by one worker: a second connection reads the next windows (binary COPY out)
while the first writes the current one in one transaction: translate in numpy, binary COPY into the
side table, check on the server that count and checksum of what landed equal what was sent, and record
the batch and the part's cursor. A crash loses at most the batches in flight; a rerun continues each
part from its cursor. Workers are processes on this machine or tasks on a Dask cluster. After the first
pass, passes over every part pick up rows inserted or changed behind the cursors until one finds
nothing (or `max_passes`). Values that cannot be translated (NULL, wrong dimension, NaN) are recorded
per id in `facebridge_migration_problems` and get a side row without a value (fatal with `strict`).

**Checksums.** A batch's checksum is the md5 of its values' binary forms in key order: one md5 per batch
on the client, one ordered `string_agg` per batch on the server (a per-row md5 cost the client more
than the map itself). The final check recomputes every batch's from the side table.

**Swap.** One transaction: block writers, translate whatever changed since, repeat the full check,
write every row's translation into the target columns with one `UPDATE ... FROM` the side table, rename
the columns, drop the side table (see docs/identity-system.md).

An unlogged table is emptied by crash recovery of the server (and is empty on a promoted standby): a
run that finds the side table empty while the job records batches starts over, and says so.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psycopg import sql
from tqdm import tqdm

from facebridge import __version__
from facebridge.blas import one_blas_thread
from facebridge.mapping.bank import RESIDUAL_CHUNK_ROWS, MapPath
from facebridge.migration import pg_codec
from facebridge.migration.pg_codec import ColumnKind
from facebridge.migration.pg_common import (
    BATCH_SEQUENCE,
    BATCHES,
    DESIGNS,
    JOBS,
    PARTS,
    PROBLEMS,
    PROGRESS_SCHEMA,
    MigrationError,
    PgMigrationResult,
    TargetColumns,
    Verification,
    connect,
    refuse_other_design,
    rename_into_place,
    send,
)
from facebridge.migration.pg_table import TableColumns, TableError, TableRef, inspect_table
from facebridge.migration.pg_workers import PartRunner
from facebridge.migration.pipeline import prefetch
from facebridge.progress import bar_disabled

__all__ = [
    "BATCHES",
    "DESIGNS",
    "JOBS",
    "PARTS",
    "PROBLEMS",
    "MigrationError",
    "Part",
    "PgMigrationResult",
    "PostgresMigration",
    "TargetColumns",
    "Verification",
    "open_migration",
]

READ_AHEAD = 2  # windows read ahead of the one being written (memory: a few batches)
MIN_BLOCK = 64  # rows: smaller blocks are padded, so a row's translation never depends on its batch
PART_LOCK_WAIT = 15.0  # seconds a worker waits for a part whose last worker's connection is closing
SIDE_PREFIX = "facebridge_side_"
WORK_MEM = "64MB"  # per sort or hash of this migration's own sessions (a batch's checksum sorts ~6 MB)
ENGINES = ("process", "dask")
STAGED_SCHEMA = [
    f"""CREATE TABLE IF NOT EXISTS {PARTS} (
        job text NOT NULL, part integer NOT NULL, after_key text, upto_key text, cursor text,
        done boolean NOT NULL DEFAULT false, updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job, part))""",
    f"CREATE SEQUENCE IF NOT EXISTS {BATCH_SEQUENCE} AS integer",
]


@dataclass(frozen=True)
class Part:
    """A range of keys one worker walks: above `after` (None: from the first key) up to and including
    `upto` (None: to the last key, rows inserted meanwhile included)."""

    number: int
    after: str | None
    upto: str | None


@dataclass
class Rows:
    """The rows read from one window of keys: `after` < key <= `end` (None: no bound).

    Keys and sources come as numpy records (`fast`: every row of the stream had one width) or as lists
    of binary values; `texts` holds the keys as text where their type has no fixed width. In a later
    pass, `previous` holds each row's side row: None, or its value and confidence in binary form."""

    after: str | None
    end: str | None
    last: bool  # the part's last window
    keys: Any  # records' V-typed key field, or list[bytes]
    sources: Any  # records of the source kind's row_dtype, or list[bytes | None]
    versions: np.ndarray  # uint32 xmin of each row
    previous: list[tuple[bytes | None, bytes | None] | None] | None
    texts: list[str] | None
    fast: bool
    kind: ColumnKind  # the sources' form as read (a real[] column may come through pgvector's cast)

    def __len__(self) -> int:
        return len(self.versions)


@dataclass
class PartOutcome:
    written: int = 0
    refreshed: int = 0
    batches: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: PartOutcome) -> None:
        self.written += other.written
        self.refreshed += other.refreshed
        self.batches += other.batches
        self.problems += other.problems


@dataclass(frozen=True)
class Written:
    written: int
    refreshed: int
    problems: list[tuple[str, str]]
    batch: int | None


class PostgresMigration:
    """Translate `ref`'s template column with `path` into `to_column` of the same table, staged in a
    side table and swapped in at once, by `workers` processes (or Dask tasks) over disjoint key ranges."""

    design = "staged"

    def __init__(
        self,
        ref: TableRef,
        path: MapPath,
        to_column: str,
        to_kind: str | None = None,
        batch_rows: int = 5_000,
        strict: bool = False,
        max_passes: int = 5,
        progress: bool = True,
        pause: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        workers: int = 1,
        engine: str = "process",
        scheduler: str | None = None,
    ) -> None:
        ref.check_target(to_column)
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
        self.ref, self.path, self.to = ref, path, TargetColumns(to_column)
        self.to_kind, self.batch_rows, self.strict = to_kind, batch_rows, strict
        self.max_passes, self.progress, self.on_batch = max_passes, progress, on_batch
        self.pause = pause  # seconds between batches: a gentler load on a busy production database
        self.workers, self.engine, self.scheduler = workers, engine, scheduler
        self.dim_in = path.maps[0].meta.source.dim
        self.dim_out = path.maps[-1].meta.target.dim
        self.job = f"{ref.qualified}.{ref.column}->{to_column}"
        self.side_name = SIDE_PREFIX + hashlib.md5(self.job.encode()).hexdigest()[:12]
        self.notes: list[str] = []  # what the run had to do that the user should know

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A connection with room to sort and hash a batch (or the checks' joins) in memory."""
        with connect(self.ref) as conn:
            conn.execute(f"SET work_mem = '{WORK_MEM}'")
            yield conn

    def worker_arguments(self) -> dict[str, Any]:
        """What a worker process needs to rebuild this migration (picklable)."""
        return {
            "ref": self.ref, "path": self.path, "to_column": self.to.name, "to_kind": self.to_kind,
            "batch_rows": self.batch_rows, "strict": self.strict, "pause": self.pause,
        }  # fmt: skip

    # ------------------------------------------------------------------------------------- SQL parts
    def side(self) -> sql.Composable:
        schema = self.ref.schema
        return sql.Identifier(schema, self.side_name) if schema else sql.Identifier(self.side_name)

    def _sql(self, text: str, **extra: sql.Composable) -> sql.Composed:
        """`text` with the table's identifiers filled in: {t} (the table, alias t in queries) {side}
        {id} {src} {to} {conf} {id_type} and {current} (side row s holds the translation of table
        row t's present source)."""
        parts: dict[str, sql.Composable] = {
            "t": self.ref.identifier(),
            "side": self.side(),
            "id": sql.Identifier(self.ref.id_column),
            "src": sql.Identifier(self.ref.column),
            "to": sql.Identifier(self.to.name),
            "conf": sql.Identifier(self.to.confidence),
            "id_type": sql.SQL(self.columns.id_type),
            "current": sql.SQL("(s.row_version = t.xmin)"),
            **extra,
        }
        return sql.SQL(text).format(**{k: v for k, v in parts.items() if "{" + k + "}" in text})

    def _bounds(self, after: str | None, upto: str | None, side: bool = False) -> sql.Composable:
        """`AND` conditions keeping the key of table row t (side row s) above `after` and up to `upto`."""
        key = sql.SQL("s.id") if side else sql.SQL("t.{}").format(sql.Identifier(self.ref.id_column))
        clauses: list[sql.Composable] = []
        if after is not None:
            clauses.append(self._sql("AND {k} > {v}::{id_type}", k=key, v=sql.Literal(after)))
        if upto is not None:
            clauses.append(self._sql("AND {k} <= {v}::{id_type}", k=key, v=sql.Literal(upto)))
        return sql.SQL(" ").join(clauses)

    # ------------------------------------------------------------------------------------- plan
    def inspect(self, conn: Any) -> None:
        """Read the catalogue and settle the target column's kind."""
        with conn.cursor() as cursor:
            self.columns: TableColumns = inspect_table(cursor, self.ref)
        existing = self.columns.type_of(self.to.name)
        if existing is not None:
            self.target_kind = ColumnKind.from_sql_type(existing)
            if self.to_kind and self.to_kind != self.target_kind.name:
                raise TableError(f"{self.to.name} exists as {existing}, not {self.to_kind}")
        else:
            self.target_kind = ColumnKind(self.to_kind) if self.to_kind else self.columns.kind
        if self.target_kind.name == "vector" or self.columns.kind.name == "vector":
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
                if cursor.fetchone() is None:
                    raise TableError("a vector column needs the pgvector extension: CREATE EXTENSION vector")
        self.key_width = pg_codec.KEY_WIDTHS.get(self.columns.id_type)
        # real[] through pgvector where the server has it: PostgreSQL converts an array to and from its
        # binary form one element at a time through the element type's functions (512 calls a row:
        # 18.5 us of server CPU per 512-d row read, against 6.1 us through `::vector`); pgvector's casts
        # copy the floats in one loop, bit for bit. A window whose cast fails (NULL elements, NaN, ...)
        # is read again as arrays, and its bad rows are reported as usual.
        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regtype('vector') IS NOT NULL")
            has_vector = bool(cursor.fetchone()[0])
            self.read_kind = (
                ColumnKind("vector") if self.columns.kind.name == "real[]" and has_vector else None
            )
            self.side_kind = self.target_kind
            cursor.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                "AND attname = 'value' AND NOT attisdropped",
                (self.side().as_string(cursor),),
            )
            found = cursor.fetchone()
            if found is not None:  # as the side table was made
                self.side_kind = ColumnKind.from_sql_type(found[0])
            elif self.target_kind.name == "real[]" and has_vector:
                self.side_kind = ColumnKind("vector")

    def description(self) -> dict[str, Any]:
        return {
            "table": self.ref.qualified,
            "id": self.ref.id_column,
            "column": self.ref.column,
            "column_type": self.columns.source_type,
            "to_column": self.to.name,
            "to_type": self.target_kind.sql_type(self.dim_out),
            "source": self.path.source,
            "target": self.path.target,
            "maps": [
                {"id": m.id, "file": m.file.rsplit("/", 1)[-1], "tensor_sha256": m.meta.tensor_sha256}
                for m in self.path.maps
            ],
            "confidence_column": self.path.has_confidence,
            "code_version": __version__,
            "design": self.design,
            "side_table": (f"{self.ref.schema}." if self.ref.schema else "") + self.side_name,
            "side_type": self.side_kind.sql_type(self.dim_out),
        }

    def _target_columns(self) -> list[tuple[str, str]]:
        wanted = [(self.to.name, self.target_kind.sql_type(self.dim_out))]
        if self.path.has_confidence:
            wanted.append((self.to.confidence, "real"))
        return wanted

    def dry_run(self) -> list[str]:
        """What a run would do, read in a read-only transaction: nothing is written."""
        with self.connect() as conn:
            conn.read_only = True
            self.inspect(conn)
            lines = [
                f"table {self.ref.qualified} in {self.ref.where}: key {self.ref.id_column} "
                f"({self.columns.id_type}), templates {self.ref.column} ({self.columns.source_type})",
                f"maps: {' then '.join(self.path.ids)} ({self.path.source} -> {self.path.target}, "
                f"{self.dim_in} -> {self.dim_out} values)",
            ]
            wanted = self._target_columns()
            to_add = [f"{name} {kind}" for name, kind in wanted if self.columns.type_of(name) is None]
            lines.append(
                "would add columns: "
                + (", ".join(to_add) if to_add else "none (all present)")
                + " (left empty until --swap)"
            )
            with conn.cursor() as cursor:
                cursor.execute(self._sql("SELECT count(*) FROM {t} t"))
                (rows,) = cursor.fetchone()
                cursor.execute("SELECT to_regclass(%s)", (self.side().as_string(cursor),))
                has_side = cursor.fetchone()[0] is not None
                done = 0
                if has_side:
                    cursor.execute(self._sql("SELECT count(*) FROM {t} t JOIN {side} s ON s.id = t.{id} "
                                             "WHERE {current}"))  # fmt: skip
                    (done,) = cursor.fetchone()
                job = self._job_row(cursor)
            batches = -(-(rows - done) // self.batch_rows)
            lines.append(
                f"{rows} rows, {done} already translated from their current source; would translate "
                f"{rows - done} in about {batches} batches of {self.batch_rows}, "
                f"{self.workers} worker{'s' if self.workers != 1 else ''}"
            )
            lines.append(f"translations kept in {self.description()['side_table']} (unlogged) until the swap")
            lines.append(
                f"progress in {JOBS} (job {self.job!r}): " + (f"state {job[0]}" if job else "no earlier run")
            )
            lines.append(f"{self.ref.column} is never altered; switch over with the swap when done")
        return lines

    # ------------------------------------------------------------------------------------- run
    def run(self) -> PgMigrationResult:
        started = time.perf_counter()
        with self.connect() as conn:
            self.inspect(conn)
            self._prepare(conn)
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.job,))
                if not cursor.fetchone()[0]:
                    raise MigrationError(f"another migration of {self.job} is running")
            try:
                with PartRunner(self) as runner, one_blas_thread():
                    return self._run_locked(conn, runner, started)
            finally:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.job,))

    def _prepare(self, conn: Any) -> None:
        """Progress tables, the target columns, the side table and the job row; a job of other maps or
        of the other design is refused."""
        with conn.transaction(), conn.cursor() as cursor:
            for statement in [*PROGRESS_SCHEMA, *STAGED_SCHEMA]:
                cursor.execute(statement)
            for name, kind in self._target_columns():
                cursor.execute(
                    self._sql("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} " + kind, c=sql.Identifier(name))
                )
            cursor.execute(f"SELECT description, state FROM {JOBS} WHERE job = %s FOR UPDATE", (self.job,))
            found = cursor.fetchone()
            plan = self.description()
            if found is None:
                cursor.execute(
                    f"INSERT INTO {JOBS} (job, description, state) VALUES (%s, %s, 'running')",
                    (self.job, json.dumps(plan)),
                )
                self._start_over(cursor)
                return
            previous, state = found
            refuse_other_design(self.job, previous, self.design)
            if state == "swapped":
                raise MigrationError(f"{self.job} was already swapped in; nothing to migrate")
            keys = ("source", "target", "maps", "to_type", "confidence_column")
            if {k: previous.get(k) for k in keys} != {k: plan[k] for k in keys}:
                raise MigrationError(
                    f"{self.to.name} was filled by another map ({[m['id'] for m in previous['maps']]}); "
                    f"migrate into another column, or drop {self.to.name}* and the job's rows in {JOBS}"
                )
            cursor.execute(
                f"UPDATE {JOBS} SET description = %s, state = 'running', updated_at = now() WHERE job = %s",
                (json.dumps(plan), self.job),
            )
            cursor.execute("SELECT to_regclass(%s)", (self.side().as_string(cursor),))
            if cursor.fetchone()[0] is None:
                self.notes.append(f"the side table {plan['side_table']} was gone: starting over")
                self._start_over(cursor)
                return
            cursor.execute(f"SELECT count(*) FROM {BATCHES} WHERE job = %s", (self.job,))
            (recorded,) = cursor.fetchone()
            cursor.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(self.side()))
            if recorded and not cursor.fetchone()[0]:
                self.notes.append(
                    f"the side table {plan['side_table']} is empty where {recorded} batches were written "
                    "(the server's crash recovery empties unlogged tables): starting over"
                )
                self._start_over(cursor)

    def _start_over(self, cursor: Any) -> None:
        """A fresh side table and no progress recorded for this job."""
        for table in (BATCHES, PROBLEMS, PARTS):
            cursor.execute(f"DELETE FROM {table} WHERE job = %s", (self.job,))
        cursor.execute(f"UPDATE {JOBS} SET cursor = NULL WHERE job = %s", (self.job,))
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.side()))
        cursor.execute(
            self._sql(
                "CREATE UNLOGGED TABLE {side} (id {id_type} PRIMARY KEY, batch integer NOT NULL, "
                "row_version xid NOT NULL, value {kind}, confidence real)",
                kind=sql.SQL(self.side_kind.sql_type(self.dim_out)),
            )
        )

    def _run_locked(self, conn: Any, runner: PartRunner, started: float) -> PgMigrationResult:
        parts = self._parts(conn)
        with conn.cursor() as cursor:
            cursor.execute(
                f"SELECT part, cursor, done FROM {PARTS} WHERE job = %s ORDER BY part", (self.job,)
            )
            progress = cursor.fetchall()
            cursor.execute(self._sql("SELECT count(*) FROM {t} t"))
            (rows,) = cursor.fetchone()
            cursor.execute(f"SELECT coalesce(sum(rows), 0) FROM {BATCHES} WHERE job = %s", (self.job,))
            (done_before,) = cursor.fetchone()
        cursors = [c for _, c, d in progress if c is not None and not d]
        resumed_from = None
        if cursors:
            resumed_from = (
                cursors[0]
                if len(progress) == 1
                else ", ".join(f"part {p} at {c!r}" for p, c, d in progress if c is not None and not d)
            )
        todo = [part for part, (_, _, done) in zip(parts, progress, strict=True) if not done]
        outcome, passes = PartOutcome(), 0
        bar = tqdm(
            total=rows, initial=min(int(done_before), rows), unit="row", unit_scale=True,
            disable=bar_disabled(self.progress), desc=f"{self.path.source} -> {self.path.target}",
        )  # fmt: skip
        with bar, runner.watching(bar, int(done_before)):
            if todo:
                passes += 1
                for result in runner.run([("fill", part, passes) for part in todo]):
                    outcome.add(result)
                with conn.cursor() as cursor:  # statistics for the passes' joins and the swap
                    cursor.execute(sql.SQL("ANALYZE {}").format(self.side()))
            # passes over every part pick up rows inserted or changed behind the cursors, until one
            # finds nothing: then every row was current when its window was read
            while passes < self.max_passes:
                passes += 1
                found = PartOutcome()
                for result in runner.run([("catch-up", part, passes) for part in parts]):
                    found.add(result)
                outcome.add(found)
                if found.written + found.refreshed == 0:
                    break
        with conn.transaction():
            # as many connections as the run used: two a worker (a reader and a writer)
            verification = self.verify(conn, connections=2 * self.workers)
            state = "complete" if verification.ok else "incomplete"
            with conn.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {JOBS} SET state = %s, finished_at = now(), updated_at = now() WHERE job = %s",
                    (state, self.job),
                )
        return PgMigrationResult(
            outcome.written, outcome.batches, passes, outcome.problems, time.perf_counter() - started,
            verification, resumed_from,
        )  # fmt: skip

    def _parts(self, conn: Any) -> list[Part]:
        """The job's parts: as recorded, or `workers` ranges of about equal row counts (cut at key
        quantiles in one index scan) on a first run. A rerun keeps the first run's parts, whatever
        its `workers`: its processes share them out."""
        with conn.cursor() as cursor:
            cursor.execute(
                f"SELECT part, after_key, upto_key FROM {PARTS} WHERE job = %s ORDER BY part", (self.job,)
            )
            found = [Part(n, a, u) for n, a, u in cursor.fetchall()]
            if found:
                return found
            bounds: list[str] = []
            if self.workers > 1:
                cursor.execute(self._sql("SELECT count(*) FROM {t} t"))
                (rows,) = cursor.fetchone()
                step = max(1, -(-rows // self.workers))
                cursor.execute(
                    self._sql(
                        "SELECT k FROM (SELECT t.{id}::text AS k, row_number() OVER (ORDER BY t.{id}) AS n "
                        "FROM {t} t) q WHERE n % {step} = 0 AND n < {rows} ORDER BY n LIMIT {most}",
                        step=sql.Literal(step),
                        rows=sql.Literal(rows),
                        most=sql.Literal(self.workers - 1),
                    )
                )
                bounds = [k for (k,) in cursor.fetchall()]
            edges: list[str | None] = [None, *bounds, None]
            parts = [Part(i, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
            cursor.executemany(
                f"INSERT INTO {PARTS} (job, part, after_key, upto_key) VALUES (%s, %s, %s, %s)",
                [(self.job, p.number, p.after, p.upto) for p in parts],
            )
        return parts

    def _job_row(self, cursor: Any) -> tuple[str, dict[str, Any]] | None:
        """This job's (state, description), or None where it never ran."""
        cursor.execute("SELECT to_regclass(%s)::oid", (JOBS,))
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute(f"SELECT state, description FROM {JOBS} WHERE job = %s", (self.job,))
        row = cursor.fetchone()
        return None if row is None else (row[0], row[1])

    # ------------------------------------------------------------------------------------- one part
    def run_part(self, task: str, part: Part, pass_number: int) -> PartOutcome:
        """Walk `part`: its first pass from its cursor ("fill": every row, no look at the side table),
        or a later pass from its start ("catch-up": the rows no side row holds current)."""
        outcome = PartOutcome()
        with self.connect() as conn, self.connect() as reader:
            self._lock_part(conn, part.number)
            try:
                start = part.after
                if task == "fill":
                    with conn.cursor() as cursor:
                        cursor.execute(
                            f"SELECT cursor, done FROM {PARTS} WHERE job = %s AND part = %s",
                            (self.job, part.number),
                        )
                        cursor_at, done = cursor.fetchone()
                    if done:
                        return outcome
                    start = cursor_at if cursor_at is not None else part.after
                windows = self._windows(reader, part, start, catch_up=task != "fill")
                for rows in prefetch(windows, READ_AHEAD):
                    written = self._write(conn, rows, pass_number, part if task == "fill" else None)
                    outcome.written += written.written
                    outcome.refreshed += written.refreshed
                    outcome.problems += written.problems
                    if written.batch is not None:
                        outcome.batches += 1
                        if self.on_batch is not None:
                            self.on_batch(written.batch)
                    if self.pause and written.written:
                        time.sleep(self.pause)
            finally:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", (self.job, part.number))
        return outcome

    def _lock_part(self, conn: Any, number: int) -> None:
        """One worker per part; a killed worker's lock goes with its connection, which the server may
        take a moment to notice."""
        deadline = time.monotonic() + PART_LOCK_WAIT
        with conn.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)", (self.job, number))
                if cursor.fetchone()[0]:
                    return
                if time.monotonic() > deadline:
                    raise MigrationError(f"part {number} of {self.job} is being migrated by another process")
                time.sleep(0.2)

    def _windows(self, conn: Any, part: Part, after: str | None, catch_up: bool) -> Iterator[Rows]:
        """The windows of `part` after key `after`, read on `conn` (the reader's connection): every
        row in a first pass; in a later one only rows no side row holds current, found first by one
        join over the part's keys (no source read) and then read in windows around them."""
        if not catch_up:
            while True:
                rows = self._read(conn, after, part.upto, catch_up)
                yield rows
                if rows.last:
                    return
                after = rows.end
        with conn.cursor() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT t.{id}::text FROM {t} t LEFT JOIN {side} s ON s.id = t.{id} "
                    "WHERE (s.id IS NULL OR NOT {current}) {bounds} ORDER BY t.{id}",
                    bounds=self._bounds(after, part.upto),
                )
            )
            stale = [key for (key,) in cursor.fetchall()]
        for start in range(0, len(stale), self.batch_rows):
            end = stale[min(start + self.batch_rows, len(stale)) - 1]
            yield self._read_range(conn, after, end, catch_up=True)
            after = end

    def _read(self, conn: Any, after: str | None, upto: str | None, catch_up: bool) -> Rows:
        """The rows among the next `batch_rows` keys after `after` (up to `upto`).

        The window is cut on the key alone (an index range), then read: asking for "the next n stale
        rows" instead lets the planner scan and hash the whole table per batch."""
        with conn.cursor() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT t.{id}::text FROM {t} t WHERE true {bounds} ORDER BY t.{id} "
                    "OFFSET {skip} LIMIT 1",
                    bounds=self._bounds(after, upto),
                    skip=sql.Literal(self.batch_rows - 1),
                )
            )
            found = cursor.fetchone()
        end: str | None = found[0] if found else upto
        return self._read_range(conn, after, end, catch_up, last=found is None or found[0] == upto)

    def _read_range(
        self, conn: Any, after: str | None, end: str | None, catch_up: bool, last: bool = False
    ) -> Rows:
        """The rows with keys above `after` up to `end`: all of them in a first pass; in a later one
        those no side row holds current, with what their side row holds."""
        import psycopg

        if self.read_kind is not None:
            try:  # in a savepoint where the swap's transaction reads: a failed cast must not end it
                with conn.transaction():
                    return self._read_as(conn, after, end, catch_up, last, self.read_kind)
            except psycopg.Error:  # a value pgvector refuses (NaN, NULL elements, ...): read as arrays
                pass
        return self._read_as(conn, after, end, catch_up, last, self.columns.kind)

    def _read_as(
        self, conn: Any, after: str | None, end: str | None, catch_up: bool, last: bool, kind: ColumnKind
    ) -> Rows:
        source: sql.Composable = self._sql("t.{src}")
        if kind != self.columns.kind:
            source = sql.SQL("{}::vector").format(source)
        with conn.cursor() as cursor:
            if catch_up:
                select = self._sql(
                    "COPY (SELECT t.{id}, {source}, t.xmin, s.batch, s.value, s.confidence, t.{id}::text "
                    "FROM {t} t LEFT JOIN {side} s ON s.id = t.{id} WHERE (s.id IS NULL OR NOT {current}) "
                    "{bounds} ORDER BY t.{id}) TO STDOUT (FORMAT BINARY)",
                    bounds=self._bounds(after, end),
                    source=source,
                )
            else:
                key_text = (
                    sql.SQL("")
                    if self.key_width is not None
                    else sql.SQL(", t.{}::text").format(sql.Identifier(self.ref.id_column))
                )
                select = self._sql(
                    "COPY (SELECT t.{id}, {source}, t.xmin {key_text} FROM {t} t WHERE true {bounds} "
                    "ORDER BY t.{id}) TO STDOUT (FORMAT BINARY)",
                    bounds=self._bounds(after, end),
                    key_text=key_text,
                    source=source,
                )
            stream = bytearray()
            with cursor.copy(select) as copy:
                for block in copy:
                    stream += block
        if self.key_width is not None and not catch_up:
            layout = [
                ("key", np.dtype(f"V{self.key_width}")),
                ("source", kind.row_dtype(self.dim_in)),
                ("version", np.dtype(">u4")),
            ]
            records = pg_codec.fixed_rows(stream, layout)
            if records is not None:  # one block of records: no Python work per row
                versions = records["version"].astype(np.uint32)
                return Rows(
                    after, end, last, records["key"], records["source"], versions, None, None, True, kind
                )
        fields = 7 if catch_up else (3 if self.key_width is not None else 4)
        parsed = pg_codec.parse_copy(stream, fields)
        versions = np.array([int.from_bytes(r[2] or b"", "big") for r in parsed], dtype=np.uint32)
        previous = [None if r[3] is None else (r[4], r[5]) for r in parsed] if catch_up else None
        texts = [(r[-1] or b"").decode() for r in parsed] if fields > 3 else None
        return Rows(after, end, last, [r[0] for r in parsed], [r[1] for r in parsed], versions,
                    previous, texts, False, kind)  # fmt: skip

    def _key_text(self, rows: Rows, index: int) -> str:
        if rows.texts is not None:
            return rows.texts[index]
        return pg_codec.key_text(bytes(rows.keys[index]), self.columns.id_type)

    def _translate(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The path applied to `matrix`, bit for bit the same whichever batch, part or worker a row
        falls in: BLAS takes other code paths for a handful of rows (whose last bits differ), so rows
        go through in blocks of MIN_BLOCK to RESIDUAL_CHUNK_ROWS, a short one padded."""
        values = np.empty((len(matrix), self.dim_out), dtype=np.float32)
        confidence = np.empty(len(matrix), dtype=np.float32) if self.path.has_confidence else None
        for start in range(0, len(matrix), RESIDUAL_CHUNK_ROWS):
            block = matrix[start : start + RESIDUAL_CHUNK_ROWS]
            n = len(block)
            if n < MIN_BLOCK:
                padded = np.repeat(block[:1], MIN_BLOCK, axis=0)
                padded[:n] = block
                block = padded
            out = np.empty((len(block), self.dim_out), dtype=np.float32)
            translated, predicted = self.path.apply_with_confidence(block, out)
            values[start : start + n] = translated[:n]
            if confidence is not None and predicted is not None:
                confidence[start : start + n] = predicted[:n]
        return values, confidence

    def _write(self, conn: Any, rows: Rows, pass_number: int, part: Part | None) -> Written:
        """Translate a window's rows into the side table in one transaction with the batch's record,
        its checksum check and (first pass) the part's cursor. In a later pass a row whose translation
        comes out as its side row holds it (same bits: another column was written) is only marked
        current again."""
        if rows.fast:
            matrix, keep, reasons = pg_codec.decode_records(rows.sources, rows.kind, self.dim_in)
            kind, dim = rows.kind, self.dim_in
            problems = {i: why or pg_codec.describe_malformed(rows.sources[i].tobytes(), kind, dim)
                        for i, why in reasons.items()}  # fmt: skip
            good, matrix = np.flatnonzero(keep), matrix[keep]
        else:
            decoded = pg_codec.decode_templates(rows.sources, rows.kind, self.dim_in)
            matrix, good, problems = decoded.matrix, decoded.good, decoded.problems
        if problems and self.strict:
            listed = "; ".join(
                f"{self._key_text(rows, i)}: {why}" for i, why in sorted(problems.items())[:10]
            )
            raise MigrationError(f"{len(problems)} rows cannot be translated ({listed})")
        translated, confidence = self._translate(matrix)
        values = pg_codec.encode_records(translated, self.side_kind)
        conf = None if confidence is None else confidence.astype(">f4")
        keep_rows = np.ones(len(good), dtype=bool)  # good rows to write (the others are refreshed)
        refresh: list[int] = []
        if rows.previous is not None:
            for position, index in enumerate(good.tolist()):
                held = rows.previous[index]
                if held is None or held[0] is None or held[0] != values[position].tobytes():
                    continue
                if (held[1] if conf is not None else None) != (
                    None if conf is None else conf[position : position + 1].tobytes()
                ):
                    continue
                keep_rows[position] = False
                refresh.append(index)
        written_good = good[keep_rows]
        values, conf = values[keep_rows], None if conf is None else conf[keep_rows]
        rewrite = sorted(set(written_good.tolist()) | set(problems))
        digest = batch_digest(values)
        problem_list = [(self._key_text(rows, i), why) for i, why in sorted(problems.items())]
        with conn.transaction(), conn.cursor() as cursor:
            batch: int | None = None
            if refresh:
                self._refresh(cursor, rows, refresh)
            if rewrite:
                cursor.execute(f"SELECT nextval('{BATCH_SEQUENCE}')")
                batch = int(cursor.fetchone()[0])
                if rows.previous is not None:
                    self._take_over(cursor, [self._key_text(rows, i) for i in rewrite])
                columns = ["id", "batch", "row_version", "value"]
                columns += ["confidence"] if self.path.has_confidence else []
                copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    self.side(), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                with cursor.copy(copy_in) as copy:
                    copy.write(self._copy_stream(rows, written_good, sorted(problems), batch, values, conf))
                first, last = self._key_text(rows, rewrite[0]), self._key_text(rows, rewrite[-1])
                landed = self._batch_on_server(cursor, batch, first, last)
                if landed != (len(values), digest):
                    raise MigrationError(
                        f"batch {batch}: the server holds {landed[0]} rows (checksum {landed[1]}) where "
                        f"{len(values)} were sent (checksum {digest}); nothing of this batch was kept"
                    )
                cursor.execute(
                    f"INSERT INTO {BATCHES} (job, batch, pass, first_id, last_id, rows, hash_sum) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (self.job, batch, pass_number, first, last, len(values), digest),
                )
                if problem_list:
                    cursor.executemany(
                        f"INSERT INTO {PROBLEMS} (job, id, reason) VALUES (%s, %s, %s)",
                        [(self.job, key, why) for key, why in problem_list],
                    )
            if part is not None:
                cursor.execute(
                    f"UPDATE {PARTS} SET cursor = %s, done = %s, updated_at = now() "
                    "WHERE job = %s AND part = %s",
                    (rows.end, rows.last, self.job, part.number),
                )
        return Written(len(values), len(refresh), problem_list, batch)

    def _batch_on_server(self, cursor: Any, batch: int, first: str, last: str) -> tuple[int, int]:
        """(rows, checksum) of what the side table holds for `batch`, whose keys lie from `first` to
        `last`: the md5 of its values' binary forms in key order (see `batch_digest`)."""
        cursor.execute(
            self._sql(
                "SELECT count(*), coalesce({digest}, 0) FROM (SELECT {value} AS value FROM {side} s "
                "WHERE s.batch = {number} AND s.id >= {first}::{id_type} AND s.id <= {last}::{id_type} "
                "AND s.value IS NOT NULL ORDER BY s.id) s",
                digest=DIGEST,
                value=send(self.side_kind, sql.SQL("s.value")),
                number=sql.Literal(batch),
                first=sql.Literal(first),
                last=sql.Literal(last),
            )
        )
        count, digest = cursor.fetchone()
        return int(count), int(digest)

    def _copy_stream(
        self,
        rows: Rows,
        good: np.ndarray,
        problems: list[int],
        batch: int,
        values: np.ndarray,
        confidence: np.ndarray | None,
    ) -> bytes:
        """The side rows of a batch as a binary COPY stream: translated rows as one block of numpy
        records where the key has a fixed width, the others (problems, other keys) tuple by tuple."""
        batch_bytes = batch.to_bytes(4, "big", signed=True)
        tuples: list[list[bytes | None]] = []
        block = b""
        if rows.fast and len(good):
            columns = [
                np.asarray(rows.keys)[good],
                np.full(len(good), batch, dtype=">i4"),
                rows.versions[good].astype(">u4"),
                values,
            ]
            block = pg_codec.fixed_copy([*columns, *([] if confidence is None else [confidence])])
        else:
            for position, index in enumerate(good.tolist()):
                row: list[bytes | None] = [
                    bytes(rows.keys[index]), batch_bytes, int(rows.versions[index]).to_bytes(4, "big"),
                    values[position].tobytes(),
                ]  # fmt: skip
                if confidence is not None:  # a slice keeps the big-endian order (a scalar would not)
                    row.append(confidence[position : position + 1].tobytes())
                tuples.append(row)
        for index in problems:
            row = [bytes(rows.keys[index]), batch_bytes, int(rows.versions[index]).to_bytes(4, "big"), None]
            if self.path.has_confidence:
                row.append(None)
            tuples.append(row)
        return pg_codec.HEADER + block + pg_codec.copy_tuples(tuples) + pg_codec.TRAILER

    def _refresh(self, cursor: Any, rows: Rows, indices: list[int]) -> None:
        """Rows written to since they were translated whose translation is unchanged: current again."""
        cursor.execute(
            self._sql(
                "UPDATE {side} s SET row_version = v.version::xid "
                "FROM unnest(%s::text[], %s::text[]) AS v(id, version) WHERE s.id = v.id::{id_type}"
            ),
            ([self._key_text(rows, i) for i in indices], [str(int(rows.versions[i])) for i in indices]),
        )

    def _take_over(self, cursor: Any, keys: list[str]) -> None:
        """Remove the side rows about to be written again and forget their problems (judged again
        now). The batches that wrote them are recorded anew: rows and checksum of what remains, as the
        server holds it."""
        cursor.execute(
            self._sql(
                "DELETE FROM {side} s USING unnest(%s::text[]) AS v(id) WHERE s.id = v.id::{id_type} "
                "RETURNING s.batch, s.value IS NOT NULL"
            ),
            (keys,),
        )
        for old_batch in sorted({b for b, translated in cursor.fetchall() if translated}):
            cursor.execute(
                f"SELECT first_id, last_id FROM {BATCHES} WHERE job = %s AND batch = %s",
                (self.job, old_batch),
            )
            found = cursor.fetchone()
            if found is None:
                continue
            count, digest = self._batch_on_server(cursor, old_batch, found[0], found[1])
            cursor.execute(
                f"UPDATE {BATCHES} SET rows = %s, hash_sum = %s WHERE job = %s AND batch = %s",
                (count, digest, self.job, old_batch),
            )
        cursor.execute(f"DELETE FROM {PROBLEMS} WHERE job = %s AND id = ANY(%s)", (self.job, keys))

    # ------------------------------------------------------------------------------------- checks
    def verify(self, conn: Any, connections: int = 1) -> Verification:
        """Counts over the whole table against the side table (a row is current when its side row
        was read from its present version), and every batch's rows and checksum recomputed on the
        server from the side table, on `connections` connections at once (`_batches_on_server`)."""
        with conn.cursor() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT count(*), count(*) FILTER (WHERE {current} AND s.value IS NOT NULL), "
                    "count(*) FILTER (WHERE {current} AND s.value IS NULL), "
                    "count(*) FILTER (WHERE s.id IS NULL OR NOT {current}) "
                    "FROM {t} t LEFT JOIN {side} s ON s.id = t.{id}"
                )
            )
            rows, translated, problems, stale = cursor.fetchone()
            cursor.execute(
                self._sql(
                    "SELECT count(*) FROM {side} s WHERE NOT EXISTS (SELECT FROM {t} t WHERE t.{id} = s.id)"
                )
            )
            (deleted,) = cursor.fetchone()
            cursor.execute(
                f"SELECT batch, rows, hash_sum, first_id, last_id FROM {BATCHES} WHERE job = %s "
                "ORDER BY batch",
                (self.job,),
            )
            recorded = cursor.fetchall()
            result = Verification(rows, translated, problems, stale, len(recorded), deleted=int(deleted))
            held = 0
            found = self._batches_on_server(conn, recorded, connections)
            for (batch, count, digest, _, _), on_server in zip(recorded, found, strict=True):
                held += on_server[0]
                if on_server != (count, int(digest)):
                    result.mismatches.append(
                        f"batch {batch}: {on_server[0]} rows with checksum {on_server[1]} on the server, "
                        f"{count} rows with checksum {digest} written"
                    )
            cursor.execute(self._sql("SELECT count(*) FROM {side} s WHERE s.value IS NOT NULL"))
            (values,) = cursor.fetchone()
            if values != held:
                result.mismatches.append(f"{values - held} translations in the side table no batch wrote")
        return result

    def _batches_on_server(
        self, conn: Any, recorded: list[tuple[Any, ...]], connections: int
    ) -> list[tuple[int, int]]:
        """`_batch_on_server` of each recorded batch (batch, rows, checksum, first key, last key), in
        the order given. The checksums are the server's CPU (0.44 s of a 4-second run over 200,000
        rows here), and at the end of a run nothing else keeps the server busy: with `connections`
        > 1 they are shared out over that many connections (`conn` and new ones), each batch still
        recomputed whole from the side table."""

        def on(cursor: Any, share: list[tuple[Any, ...]]) -> list[tuple[int, int]]:
            return [
                self._batch_on_server(cursor, b, first, last) if n else (0, 0)
                for b, n, _, first, last in share
            ]

        if connections <= 1 or len(recorded) < 2:
            with conn.cursor() as cursor:
                return on(cursor, recorded)

        def elsewhere(share: list[tuple[Any, ...]]) -> list[tuple[int, int]]:
            with self.connect() as other, other.cursor() as cursor:
                return on(cursor, share)

        shares = [recorded[i::connections] for i in range(connections)]
        with ThreadPoolExecutor(connections - 1) as pool:
            others = [pool.submit(elsewhere, share) for share in shares[1:]]
            with conn.cursor() as cursor:
                results = [on(cursor, shares[0])]
            results += [future.result() for future in others]
        found: list[tuple[int, int]] = [(0, 0)] * len(recorded)
        for i, result in enumerate(results):
            found[i::connections] = result
        return found

    # ------------------------------------------------------------------------------------- swap
    def swap(self, retire_as: str, also: list[str]) -> Verification:
        """In one transaction: block writers, translate whatever changed since, check, write every
        row's translation into the target columns, rename the source column to `retire_as` and the
        translated one to the source's name, run `also` (e.g. the identity system's own "current
        model" setting) and drop the side table. Readers go on until the renames, at the very end."""
        with self.connect() as conn, one_blas_thread():
            self.inspect(conn)
            with conn.transaction(), conn.cursor() as cursor:
                found = self._job_row(cursor)
                if found is not None:
                    refuse_other_design(self.job, found[1], self.design)
                if found is None or found[0] not in ("complete", "incomplete"):
                    state = found[0] if found else "never run"
                    raise MigrationError(f"{self.job} is {state}; run the migration to the end first")
                cursor.execute(self._sql("LOCK TABLE {t} IN SHARE ROW EXCLUSIVE MODE"))
                for rows in self._windows(conn, Part(0, None, None), None, catch_up=True):
                    self._write(conn, rows, 0, None)
                verification = self.verify(conn)
                if not verification.ok:
                    raise MigrationError("not swapped: " + verification.describe())
                if retire_as in self.columns.existing:
                    raise MigrationError(f"not swapped: {self.ref.qualified} has a column {retire_as}")
                conf = self._sql(", {conf} = s.confidence") if self.path.has_confidence else sql.SQL("")
                value: sql.Composable = sql.SQL("s.value")
                if self.side_kind != self.target_kind:  # real[] staged as vector
                    value = sql.SQL("s.value::{}").format(sql.SQL(self.target_kind.sql_type(self.dim_out)))
                cursor.execute(
                    self._sql(
                        "UPDATE {t} t SET {to} = {value} {conf} FROM {side} s WHERE s.id = t.{id}",
                        conf=conf,
                        value=value,
                    )
                )
                if cursor.rowcount != verification.rows:
                    raise MigrationError(
                        f"not swapped: {cursor.rowcount} rows took their translation, "
                        f"{verification.rows} expected"
                    )
                cursor.execute(self._sql("SELECT count(t.{to}) FROM {t} t"))
                if cursor.fetchone()[0] != verification.translated:
                    raise MigrationError("not swapped: the translated column does not hold every translation")
                rename_into_place(cursor, self.ref, self._sql, self.job, retire_as, verification, also)
                cursor.execute(sql.SQL("DROP TABLE {}").format(self.side()))
        return verification


def batch_digest(values: np.ndarray) -> int:
    """A batch's checksum: the first 8 bytes of the md5 of its values' binary forms (records of
    `row_dtype`) concatenated in key order, as a signed 64-bit integer (0 for none). One md5 over the
    batch costs the client a fraction of one per row, and the server an aggregate (`DIGEST`)."""
    if not len(values):
        return 0
    return int.from_bytes(
        hashlib.md5(np.ascontiguousarray(values).tobytes()).digest()[:8], "big", signed=True
    )


# `batch_digest` on the server, over the binary forms `s.value` of a batch's side rows in key order
# (NULL for none). The rows come in that order from a subquery (its index scan, or its sort), rather
# than from `string_agg(... ORDER BY s.id)`: PostgreSQL before 16 sorts an aggregate's input itself
# even when it arrives sorted, and that sort of 10,000 values cost 43% of the check (0.65 s against
# 0.37 s per 200,000 128-d `vector` rows). An aggregate over an ordered subquery reads it in order (a
# subquery with ORDER BY is not flattened into its parent, and string_agg has no partial form that a
# parallel plan could split); were the order ever lost, the checksums would differ and the batch
# would be reported, never passed.
DIGEST = sql.SQL("('x' || left(md5(string_agg(s.value, ''::bytea)), 16))::bit(64)::bigint")


def open_migration(design: str, ref: TableRef, path: MapPath, to_column: str, **options: Any) -> Any:
    """The migration of `design` ("staged" or "in-place"); the in-place one runs as one worker."""
    if design == "staged":
        return PostgresMigration(ref, path, to_column, **options)
    if design != "in-place":
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}")
    from facebridge.migration.pg_inplace import InPlaceMigration

    workers = options.pop("workers", 1)
    engine = options.pop("engine", "process")
    options.pop("scheduler", None)
    if workers != 1 or engine != "process":
        raise MigrationError(
            "the in-place design runs as one worker in this process, not in worker processes or on Dask"
        )
    return InPlaceMigration(ref, path, to_column, **options)
