"""What both designs of the PostgreSQL migration share: the progress tables, the job's names, the
check's result and the SQL forms of the checksums (see postgres.py for the staged design, the default,
and pg_inplace.py for the in-place one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from facebridge.migration.pg_codec import ColumnKind
from facebridge.migration.pg_table import TableError, TableRef

JOBS = "facebridge_migrations"
BATCHES = "facebridge_migration_batches"
PROBLEMS = "facebridge_migration_problems"
PARTS = "facebridge_migration_parts"
BATCH_SEQUENCE = "facebridge_migration_batch_seq"
DESIGNS = ("staged", "in-place")
PROGRESS_SCHEMA = [
    f"""CREATE TABLE IF NOT EXISTS {JOBS} (
        job text PRIMARY KEY, description jsonb NOT NULL, state text NOT NULL, cursor text,
        started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz)""",
    f"""CREATE TABLE IF NOT EXISTS {BATCHES} (
        job text NOT NULL, batch integer NOT NULL, pass integer NOT NULL, first_id text, last_id text,
        rows integer NOT NULL, hash_sum numeric NOT NULL, written_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job, batch))""",
    f"""CREATE TABLE IF NOT EXISTS {PROBLEMS} (
        job text NOT NULL, id text NOT NULL, reason text NOT NULL, source_md5 bytea,
        found_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (job, id))""",
]


class MigrationError(RuntimeError):
    """The migration cannot go on (another run holds the job, strict mode met a bad value, ...)."""


@dataclass(frozen=True)
class TargetColumns:
    """The names of the columns a migration into `name` fills."""

    name: str

    @property
    def confidence(self) -> str:
        return f"{self.name}_confidence"

    @property
    def source_md5(self) -> str:
        return f"{self.name}_source_md5"

    @property
    def row_version(self) -> str:
        return f"{self.name}_row_version"

    @property
    def batch(self) -> str:
        return f"{self.name}_batch"


@dataclass
class Verification:
    """The final check: every row translated from its current source or listed as a problem, and
    each batch's rows and checksum on the server equal to what the batch sent."""

    rows: int
    translated: int
    problems: int
    stale: int
    batches: int
    mismatches: list[str] = field(default_factory=list)
    deleted: int = 0

    @property
    def ok(self) -> bool:
        return self.stale == 0 and not self.mismatches and self.translated + self.problems == self.rows

    def describe(self) -> str:
        verdict = "checked" if self.ok else "CHECK FAILED"
        text = (
            f"{verdict}: {self.rows} rows, {self.translated} translated, {self.problems} with problems, "
            f"{self.stale} stale; {self.batches} batch checksums compared"
        )
        if self.deleted:
            text += f"; {self.deleted} translated rows deleted from the table since"
        return text + "".join(f"\n  {m}" for m in self.mismatches)

    def compare(self, recorded: dict[int, tuple[int, int]], on_server: dict[int, tuple[int, int]]) -> None:
        """Each batch's (rows, checksum) as recorded when it was written against what the server holds
        now; fewer rows than recorded are rows deleted since, anything else a mismatch."""
        on_server = dict(on_server)
        for batch, (count, total) in sorted(recorded.items()):
            found_count, found_total = on_server.pop(batch, (0, 0))
            if (found_count, found_total) == (count, total):
                continue
            if found_count < count:
                self.deleted += count - found_count  # rows removed by the application since
            else:
                self.mismatches.append(
                    f"batch {batch}: {found_count} rows with checksum {found_total} on the server, "
                    f"{count} rows with checksum {total} written"
                )
        for batch, (count, _) in sorted(on_server.items(), key=lambda item: item[0] or 0):
            self.mismatches.append(f"{count} rows carry batch {batch}, which this job never wrote")


@dataclass
class PgMigrationResult:
    rows_written: int
    batches: int
    passes: int
    problems: list[tuple[str, str]]
    seconds: float
    verification: Verification
    resumed_from: str | None


@contextmanager
def connect(ref: TableRef) -> Iterator[Any]:
    """An autocommit connection to `ref`'s server; a failure is a one-line TableError."""
    import psycopg

    try:
        conn = psycopg.connect(ref.dsn, autocommit=True)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableError(f"cannot connect to {ref.where}: {first}") from exc
    try:
        yield conn
    finally:
        conn.close()


def send(kind: ColumnKind, expression: sql.Composable) -> sql.Composable:
    """`expression` (a value of `kind`) in its binary form, as SQL."""
    function = kind.send_function()
    return expression if function is None else sql.SQL(function + "({})").format(expression)


def design_of(description: dict[str, Any]) -> str:
    """The design a job was started with (jobs from before there was a choice ran in place)."""
    return str(description.get("design", "in-place"))


def refuse_other_design(job: str, description: dict[str, Any], design: str) -> None:
    started = design_of(description)
    if started != design:
        raise MigrationError(
            f"{job} was started with the {started} design; rerun with --design {started} "
            f"(or drop its columns and the job's rows in {JOBS} to start over)"
        )


def rename_into_place(
    cursor: Any,
    ref: TableRef,
    sql_of: Callable[..., sql.Composed],
    job: str,
    retire_as: str,
    verification: Verification,
    also: Sequence[str],
) -> None:
    """The end of a swap, the same for both designs (inside the swap's transaction, the translated
    column already complete): the source column renamed to `retire_as`, the translated one to the
    source's name, NOT NULL carried over, the `also` statements run and the job marked swapped."""
    cursor.execute(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
        (ref.identifier().as_string(cursor), ref.column),
    )
    not_null = bool(cursor.fetchone()[0])
    cursor.execute(sql_of("ALTER TABLE {t} RENAME COLUMN {src} TO {r}", r=sql.Identifier(retire_as)))
    cursor.execute(sql_of("ALTER TABLE {t} RENAME COLUMN {to} TO {src}"))
    if not_null:
        # new enrolments write only the new column: the retired one must accept NULL, and the new one
        # keeps the guarantee the old one gave (where no row lacks a template)
        cursor.execute(sql_of("ALTER TABLE {t} ALTER COLUMN {r} DROP NOT NULL", r=sql.Identifier(retire_as)))
        if verification.problems == 0:
            cursor.execute(sql_of("ALTER TABLE {t} ALTER COLUMN {src} SET NOT NULL"))
    for statement in also:
        cursor.execute(statement.encode())
    cursor.execute(
        f"UPDATE {JOBS} SET state = 'swapped', updated_at = now(), "
        "description = description || jsonb_build_object('retired_as', %s::text) WHERE job = %s",
        (retire_as, job),
    )
