"""The in-place design of the PostgreSQL migration (`--design in-place`; the staged one in postgres.py is
the default): every row of the live table updated with its translation, batch by batch, resumable.

It was the migration's only design before the staged one; it stays for galleries whose writers cannot
wait for the staged design's swap, which writes every row in its one transaction (docs/migration.md
compares them). It runs as one worker.

The table keeps its source column untouched. The migration adds (if missing) five nullable columns,
named after `--to-column` (say `template_b`):

- `template_b`: the translated template, of the source column's kind (`real[]`, `double precision[]`,
  `vector(n)`, `bytea`) unless told otherwise;
- `template_b_confidence` (`real`): each row's expected cosine with the target model's own embedding,
  when every map of the path carries a confidence predictor;
- `template_b_source_md5` (`bytea`): md5 of the source value the row was translated from. A row is
  *stale* when this differs from the source's current md5, so a row inserted or updated while the
  migration runs is seen and translated again, and a rerun skips every row already done;
- `template_b_row_version` (`bigint`): the row version (xmin) the migration's own write gave the row.
  Any later write to the row changes its xmin, so rows whose xmin still equals it are known unchanged
  without reading (and detoasting) their source: the passes after the first and the checks hash only
  the rows some other write touched;
- `template_b_batch` (`integer`): the batch that wrote it, for the checksums.

Work goes in windows of `batch_rows` keys walked in order (keyset pagination: `WHERE id > last ORDER
BY id`). A second connection reads the stale rows of the next windows (binary COPY out) while the
first writes the current one in one transaction: translate in numpy, binary COPY into a temporary
table, UPDATE ... FROM it the rows not written since they were read (same xmin), check on the server
that count and checksum of what landed equal what was sent, and record the batch and the cursor in
`facebridge_migration_batches` / `facebridge_migrations`. A crash loses at most the batch in
flight; a rerun continues from the cursor. After the keyset pass, passes from the start pick up rows
changed behind the cursor, until one finds nothing (or `max_passes`, then the remaining ids are
reported). Values that cannot be translated (NULL, wrong dimension, NaN) are recorded per id in
`facebridge_migration_problems` and left NULL (fatal with `strict`).

`swap` switches the identity system over in one transaction (see docs/identity-system.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg import sql
from tqdm import tqdm

from facebridge import __version__
from facebridge.mapping.bank import MapPath
from facebridge.migration import pg_codec
from facebridge.migration.pg_codec import ColumnKind
from facebridge.migration.pg_common import (
    BATCHES,
    JOBS,
    PROBLEMS,
    PROGRESS_SCHEMA,
    MigrationError,
    PgMigrationResult,
    TargetColumns,
    Verification,
    connect,
    refuse_other_design,
    rename_into_place,
)
from facebridge.migration.pg_common import send as _send
from facebridge.migration.pg_table import TableColumns, TableError, TableRef, inspect_table
from facebridge.migration.pipeline import prefetch
from facebridge.progress import bar_disabled

STAGING = "facebridge_staging"
READ_AHEAD = 2  # windows read ahead of the one being written (memory: a few batches)


@dataclass(frozen=True)
class Window:
    """The stale rows (key as text, source in binary form, row version) among one range of keys."""

    end: str | None  # the range's last key; None: it runs to the table's end
    rows: list[list[bytes | None]]

    @property
    def last_key(self) -> str:
        """Where the next window starts (the range's end, or its last row when open-ended)."""
        return self.end if self.end is not None else (self.rows[-1][0] or b"").decode()


class InPlaceMigration:
    """Translate `ref`'s template column with `path` into `to_column` of the same table."""

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
    ) -> None:
        ref.check_target(to_column)
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.ref, self.path, self.to = ref, path, TargetColumns(to_column)
        self.to_kind, self.batch_rows, self.strict = to_kind, batch_rows, strict
        self.max_passes, self.progress, self.on_batch = max_passes, progress, on_batch
        self.pause = pause  # seconds between batches: a gentler load on a busy production database
        self.dim_in = path.maps[0].meta.source.dim
        self.dim_out = path.maps[-1].meta.target.dim
        self.job = f"{ref.qualified}.{ref.column}->{to_column}"

    # ------------------------------------------------------------------------------------- connection
    def connect(self) -> AbstractContextManager[Any]:
        return connect(self.ref)

    # ------------------------------------------------------------------------------------- SQL parts
    def _sql(self, text: str, **extra: sql.Composable) -> sql.Composed:
        """`text` with the table's identifiers filled in: {t} {id} {src} {to} {conf} {md5} {batch}
        {id_type}, {src_digest} (md5 of the source's binary form, '' for NULL), {stale} and
        {to_hash} (the 64-bit row hash of the translated value)."""
        parts: dict[str, sql.Composable] = {
            "t": self.ref.identifier(),
            "id": sql.Identifier(self.ref.id_column),
            "src": sql.Identifier(self.ref.column),
            "to": sql.Identifier(self.to.name),
            "conf": sql.Identifier(self.to.confidence),
            "md5": sql.Identifier(self.to.source_md5),
            "batch": sql.Identifier(self.to.batch),
            "version": sql.Identifier(self.to.row_version),
            "id_type": sql.SQL(self.columns.id_type),
            **extra,
        }
        src_send = _send(self.columns.kind, sql.SQL("t.{}").format(parts["src"]))
        parts["src_digest"] = sql.SQL(
            "(CASE WHEN t.{src} IS NULL THEN '\\x'::bytea ELSE decode(md5({send}), 'hex') END)"
        ).format(src=parts["src"], send=src_send)
        # never written by the migration, or written again since (xmin moved) with another source
        parts["stale"] = sql.SQL(
            "(t.{md5} IS NULL OR (t.{version} IS DISTINCT FROM t.xmin::text::bigint AND t.{md5} <> {digest}))"
        ).format(md5=parts["md5"], version=parts["version"], digest=parts["src_digest"])
        to_send = _send(self.target_kind, sql.SQL("t.{}").format(parts["to"]))
        parts["to_hash"] = sql.SQL("(('x' || left(md5({}), 16))::bit(64)::bigint)").format(to_send)
        return sql.SQL(text).format(**{k: v for k, v in parts.items() if "{" + k + "}" in text})

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
            "design": "in-place",
        }

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
            lines.append("would add columns: " + (", ".join(to_add) if to_add else "none (all present)"))
            with conn.cursor() as cursor:
                cursor.execute(self._sql("SELECT count(*) FROM {t} t"))
                (rows,) = cursor.fetchone()
                done = 0
                if not to_add:
                    cursor.execute(self._sql("SELECT count(*) FROM {t} t WHERE NOT {stale}"))
                    (done,) = cursor.fetchone()
                job = self._job_row(cursor)
            batches = -(-(rows - done) // self.batch_rows)
            lines.append(
                f"{rows} rows, {done} already translated from their current source; would translate "
                f"{rows - done} in about {batches} batches of {self.batch_rows}"
            )
            lines.append(
                f"progress in {JOBS} (job {self.job!r}): "
                + (f"state {job[0]}, cursor {job[1]!r}" if job else "no earlier run")
            )
            lines.append(f"{self.ref.column} is never altered; switch over with --swap when done")
        return lines

    def _target_columns(self) -> list[tuple[str, str]]:
        wanted = [(self.to.name, self.target_kind.sql_type(self.dim_out))]
        if self.path.has_confidence:
            wanted.append((self.to.confidence, "real"))
        wanted += [(self.to.source_md5, "bytea"), (self.to.row_version, "bigint"), (self.to.batch, "integer")]
        return wanted

    # ------------------------------------------------------------------------------------- run
    def run(self) -> PgMigrationResult:
        started = time.perf_counter()
        with self.connect() as conn:
            self.inspect(conn)
            self._prepare(conn)
            self._prepare_staging(conn)
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.job,))
                if not cursor.fetchone()[0]:
                    raise MigrationError(f"another migration of {self.job} is running")
            try:
                with self.connect() as reader:
                    return self._run_locked(conn, reader, started)
            finally:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.job,))

    def _prepare(self, conn: Any) -> None:
        """Progress tables, the target columns and the job row; a job of other maps is refused."""
        with conn.transaction(), conn.cursor() as cursor:
            for statement in PROGRESS_SCHEMA:
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
                return
            previous, state = found
            refuse_other_design(self.job, previous, "in-place")
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

    def _run_locked(self, conn: Any, reader: Any, started: float) -> PgMigrationResult:
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT cursor FROM {JOBS} WHERE job = %s", (self.job,))
            resumed_from = cursor.fetchone()[0]
            self._next_batch = first_batch = self._next_batch_number(cursor)
            cursor.execute(self._sql("SELECT count(*), count(t.{md5}) FROM {t} t"))
            rows, done = cursor.fetchone()
        written, passes, problems = 0, 0, []
        bar = tqdm(
            total=rows, initial=done, unit="row", unit_scale=True, disable=bar_disabled(self.progress),
            desc=f"{self.path.source} -> {self.path.target}",
        )  # fmt: skip
        with bar:
            start_after = resumed_from
            while passes < self.max_passes:
                passes += 1
                found = 0
                # the next windows are read on a second connection while this one writes
                for window in prefetch(self._windows(reader, start_after), READ_AHEAD):
                    _, count, batch_problems = self._write_window(conn, window, passes)
                    found += count
                    problems += batch_problems
                    bar.update(count)
                    if self.pause and count:
                        time.sleep(self.pause)
                written += found
                with conn.cursor() as cursor:
                    self._set_cursor(cursor, None)  # the next pass starts from the first key
                # a pass from the first key that found nothing proves every row current; a pass that
                # found rows (or began mid-table) is followed by one from the start, for rows inserted
                # or updated behind the cursor meanwhile
                if found == 0 and start_after is None:
                    break
                start_after = None
        with conn.transaction():
            verification = self.verify(conn)
            state = "complete" if verification.ok else "incomplete"
            with conn.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {JOBS} SET state = %s, finished_at = now(), updated_at = now() WHERE job = %s",
                    (state, self.job),
                )
        return PgMigrationResult(
            written, self._next_batch - first_batch, passes, problems, time.perf_counter() - started,
            verification, resumed_from,
        )  # fmt: skip

    def _set_cursor(self, cursor: Any, value: str | None) -> None:
        """Where a resumed run starts (None: from the first key)."""
        cursor.execute(f"UPDATE {JOBS} SET cursor = %s, updated_at = now() WHERE job = %s", (value, self.job))

    def _next_batch_number(self, cursor: Any) -> int:
        cursor.execute(f"SELECT coalesce(max(batch), 0) FROM {BATCHES} WHERE job = %s", (self.job,))
        return int(cursor.fetchone()[0]) + 1

    def _job_row(self, cursor: Any) -> tuple[str, str | None] | None:
        """This job's (state, cursor), or None where it never ran (the progress tables may not exist)."""
        cursor.execute("SELECT to_regclass(%s)::oid", (JOBS,))
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute(f"SELECT state, cursor FROM {JOBS} WHERE job = %s", (self.job,))
        row = cursor.fetchone()
        return None if row is None else (row[0], row[1])

    def _one_batch(
        self, conn: Any, after: str | None, pass_number: int
    ) -> tuple[str, int, list[tuple[str, str]]] | None:
        """Read and write the next window after key `after` in one transaction (the swap's way: its
        lock covers both). Returns what `_write_window` does, or None past the last key."""
        with conn.transaction():
            window = self._read_window(conn, after)
            return None if window is None else self._write_window(conn, window, pass_number)

    def _windows(self, conn: Any, after: str | None) -> Iterator[Window]:
        """Every window from key `after` to the last key, read on `conn` (the reader's connection)."""
        while (window := self._read_window(conn, after)) is not None:
            yield window
            after = window.last_key

    def _read_window(self, conn: Any, after: str | None) -> Window | None:
        """The stale rows among the next `batch_rows` keys after `after` (None past the last key).

        The window is cut on the key alone (an index range), then filtered for stale rows: asking for
        "the next n stale rows" instead lets the planner scan and hash the whole table per batch."""
        after_clause = (
            self._sql("AND t.{id} > {after}::{id_type}", after=sql.Literal(after)) if after else sql.SQL("")
        )
        with conn.cursor() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT t.{id}::text FROM {t} t WHERE true {after_clause} ORDER BY t.{id} "
                    "OFFSET {skip} LIMIT 1",
                    after_clause=after_clause,
                    skip=sql.Literal(self.batch_rows - 1),
                )
            )
            found_end = cursor.fetchone()
            window_end: str | None = found_end[0] if found_end else None
            upper = (
                self._sql("AND t.{id} <= {end}::{id_type}", end=sql.Literal(window_end))
                if window_end is not None
                else sql.SQL("")
            )
            select = self._sql(
                "COPY (SELECT t.{id}::text, t.{src}, t.xmin::text FROM {t} t "
                "WHERE {stale} {after_clause} {upper} ORDER BY t.{id}) TO STDOUT (FORMAT BINARY)",
                after_clause=after_clause,
                upper=upper,
            )
            with cursor.copy(select) as copy:
                stream = b"".join(bytes(block) for block in copy)
        rows = pg_codec.parse_copy(stream, 3)
        if not rows and window_end is None:
            return None
        return Window(window_end, rows)

    def _write_window(
        self, conn: Any, window: Window, pass_number: int
    ) -> tuple[str, int, list[tuple[str, str]]]:
        """Translate a window's rows and write those nobody changed since they were read, in one
        transaction with the batch's record, checksum check and the cursor. Returns (last key of the
        window, rows changed, problems)."""
        rows = window.rows
        with conn.transaction(), conn.cursor() as cursor:
            if not rows:
                self._set_cursor(cursor, window.last_key)
                return window.last_key, 0, []
            ids = [(r[0] or b"").decode() for r in rows]
            sources = [r[1] for r in rows]
            decoded = pg_codec.decode_templates(sources, self.columns.kind, self.dim_in)
            if decoded.problems and self.strict:
                listed = "; ".join(f"{ids[i]}: {why}" for i, why in sorted(decoded.problems.items())[:10])
                raise MigrationError(f"{len(decoded.problems)} rows cannot be translated ({listed})")
            values: list[bytes | None] = [None] * len(rows)
            confidences: list[bytes | None] = [None] * len(rows)
            if len(decoded.good):
                out = np.empty((len(decoded.good), self.dim_out), dtype=np.float32)
                translated, confidence = self.path.apply_with_confidence(decoded.matrix, out)
                encoded = pg_codec.encode_templates(translated, self.target_kind)
                conf_bytes = pg_codec.float4(confidence) if confidence is not None else None
                for position, index in enumerate(decoded.good.tolist()):
                    values[index] = encoded[position]
                    if conf_bytes is not None:
                        confidences[index] = conf_bytes[position]
            digests = [pg_codec.digest(s) for s in sources]
            staging = pg_codec.build_copy(
                [
                    (i.encode(), v, c, d, r[2])
                    for i, v, c, d, r in zip(ids, values, confidences, digests, rows, strict=True)
                ]
            )
            copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(STAGING))
            with cursor.copy(copy_in) as copy:
                copy.write(staging)
            # statistics of the key alone (the join's planning needs no more; array statistics would
            # cost more than the batch)
            cursor.execute(sql.SQL("ANALYZE {} (id)").format(sql.Identifier(STAGING)))
            # one statement writes the rows nobody changed since they were read (same row version,
            # xmin; a row changed in between keeps its old source md5, so it stays stale and a later
            # pass translates it) and returns, for rows an earlier batch had written, that batch and
            # the hash of the value replaced (the statement's snapshot: the version just updated)
            batch = self._next_batch
            cursor.execute(
                self._sql(
                    "WITH updated AS (UPDATE {t} t SET {to} = s.value, {conf_set} {md5} = s.source_md5, "
                    "{version} = pg_current_xact_id()::text::bigint % 4294967296, "
                    "{batch} = CASE WHEN s.value IS NULL THEN NULL ELSE {number} END "
                    "FROM {staging} s WHERE t.{id} = s.id::{id_type} AND t.xmin::text = s.row_version "
                    "RETURNING s.id), "
                    "replaced AS (SELECT s.id, t.{batch} AS batch, "
                    "CASE WHEN t.{to} IS NULL THEN NULL ELSE {to_hash} END AS hash "
                    "FROM {t} t JOIN {staging} s ON t.{id} = s.id::{id_type} WHERE t.{batch} IS NOT NULL) "
                    "SELECT u.id, r.batch, r.hash FROM updated u LEFT JOIN replaced r ON r.id = u.id",
                    staging=sql.Identifier(STAGING),
                    number=sql.Literal(batch),
                    conf_set=self._sql("{conf} = s.confidence,") if self.path.has_confidence else sql.SQL(""),
                )
            )
            updated = cursor.fetchall()
            updated_ids = [row[0] for row in updated]
            position_of = {key: index for index, key in enumerate(ids)}
            sent = [values[position_of[key]] for key in updated_ids]
            sent_rows = sum(1 for v in sent if v is not None)
            sent_sum = sum(pg_codec.row_hash(v) for v in sent if v is not None)
            cursor.execute(
                self._sql(
                    "SELECT count(*), coalesce(sum({to_hash}), 0) FROM {t} t "
                    "JOIN {staging} s ON t.{id} = s.id::{id_type} WHERE t.{batch} = {number}",
                    staging=sql.Identifier(STAGING),
                    number=sql.Literal(batch),
                )
            )
            landed_rows, landed_sum = cursor.fetchone()
            if (landed_rows, int(landed_sum)) != (sent_rows, sent_sum):
                raise MigrationError(
                    f"batch {batch}: the server holds {landed_rows} rows (checksum {landed_sum}) where "
                    f"{sent_rows} were sent (checksum {sent_sum}); nothing of this batch was kept"
                )
            # problems of rows written now (a row changed since it was read is judged by a later pass)
            updated_set = set(updated_ids)
            problems = [(i, why) for i, why in sorted(decoded.problems.items()) if ids[i] in updated_set]
            self._record(cursor, batch, pass_number, ids, updated, sent_rows, sent_sum, problems, digests)
            self._set_cursor(cursor, window.last_key)
            cursor.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGING)))
        self._next_batch += 1
        if self.on_batch is not None:
            self.on_batch(batch)
        return window.last_key, len(updated_ids), [(ids[i], why) for i, why in problems]

    def _record(
        self,
        cursor: Any,
        batch: int,
        pass_number: int,
        ids: list[str],
        updated: list[tuple[str, int | None, int | None]],
        rows: int,
        hash_sum: int,
        problems: list[tuple[int, str]],
        digests: list[bytes],
    ) -> None:
        """The batch's checksum, the rows it took over from earlier batches, and its problems."""
        cursor.execute(
            f"INSERT INTO {BATCHES} (job, batch, pass, first_id, last_id, rows, hash_sum) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (self.job, batch, pass_number, ids[0], ids[-1], rows, hash_sum),
        )
        taken: dict[int, tuple[int, int]] = {}
        for _, old_batch, old_hash in updated:
            if old_batch is not None and old_hash is not None:
                count, total = taken.get(old_batch, (0, 0))
                taken[old_batch] = (count + 1, total + int(old_hash))
        for old_batch, (count, total) in taken.items():
            cursor.execute(
                f"UPDATE {BATCHES} SET rows = rows - %s, hash_sum = hash_sum - %s "
                "WHERE job = %s AND batch = %s",
                (count, total, self.job, old_batch),
            )
        updated_ids = [row[0] for row in updated]
        cursor.execute(f"DELETE FROM {PROBLEMS} WHERE job = %s AND id = ANY(%s)", (self.job, updated_ids))
        bad = [(self.job, ids[i], why, digests[i]) for i, why in problems]
        if bad:
            cursor.executemany(
                f"INSERT INTO {PROBLEMS} (job, id, reason, source_md5) VALUES (%s, %s, %s, %s)", bad
            )

    # ------------------------------------------------------------------------------------- checks
    def verify(self, conn: Any) -> Verification:
        """Counts over the whole table and every batch's rows and checksum, recomputed on the server."""
        with conn.cursor() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT count(*), count(t.{to}), count(*) FILTER (WHERE {stale}), "
                    "count(*) FILTER (WHERE t.{md5} IS NOT NULL AND t.{to} IS NULL) FROM {t} t"
                )
            )
            rows, translated, stale, problems = cursor.fetchone()
            cursor.execute(
                self._sql(
                    "SELECT t.{batch}, count(*), sum({to_hash}) FROM {t} t "
                    "WHERE t.{to} IS NOT NULL GROUP BY 1"
                )
            )
            on_server = {b: (n, int(s)) for b, n, s in cursor.fetchall()}
            cursor.execute(f"SELECT batch, rows, hash_sum FROM {BATCHES} WHERE job = %s", (self.job,))
            recorded = {b: (n, int(s)) for b, n, s in cursor.fetchall()}
        result = Verification(rows, translated, problems, stale, len(recorded))
        result.compare(recorded, on_server)
        return result

    # ------------------------------------------------------------------------------------- swap
    def swap(self, retire_as: str, also: list[str]) -> Verification:
        """In one transaction: block writers, translate whatever changed since, check, then rename
        the source column to `retire_as` and the translated one to the source's name, and run
        `also` (e.g. the identity system's own "current model" setting)."""
        with self.connect() as conn:
            self.inspect(conn)
            with conn.transaction(), conn.cursor() as cursor:
                found = self._job_row(cursor)
                if found is not None:
                    cursor.execute(f"SELECT description FROM {JOBS} WHERE job = %s", (self.job,))
                    refuse_other_design(self.job, cursor.fetchone()[0], "in-place")
                if found is None or found[0] not in ("complete", "incomplete"):
                    state = found[0] if found else "never run"
                    raise MigrationError(f"{self.job} is {state}; run the migration to the end first")
                cursor.execute(self._sql("LOCK TABLE {t} IN SHARE ROW EXCLUSIVE MODE"))
                self._prepare_staging(conn)
                self._next_batch = self._next_batch_number(cursor)
                after: str | None = None
                while (batch := self._one_batch(conn, after, 0)) is not None:
                    after = batch[0]
                verification = self.verify(conn)
                if not verification.ok:
                    raise MigrationError("not swapped: " + verification.describe())
                if retire_as in self.columns.existing:
                    raise MigrationError(f"not swapped: {self.ref.qualified} has a column {retire_as}")
                rename_into_place(cursor, self.ref, self._sql, self.job, retire_as, verification, also)
        return verification

    def _prepare_staging(self, conn: Any) -> None:
        with conn.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} "
                    "(id text, value {}, confidence real, source_md5 bytea, row_version text)"
                ).format(sql.Identifier(STAGING), sql.SQL(self.target_kind.sql_type(self.dim_out)))
            )
