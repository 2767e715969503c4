"""Which table, key and column a PostgreSQL migration works on, named in one URL, and what they hold.

    postgresql://user@host:5432/db?table=faces&id=user_id&column=template_a

`table`, `id` and `column` are taken out of the query; everything else (sslmode, options, ...) is
passed to libpq. `table` may be schema-qualified (`identity.faces`). The key must be unique (keyset
pagination walks it in order) and the column one of the kinds of `pg_codec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from psycopg import sql

from facebridge.migration.pg_codec import ColumnKind

TABLE_PARAMETERS = ("table", "id", "column")


class TableError(ValueError):
    """The URL, the table or one of its columns cannot be migrated; the message is one line."""


@dataclass(frozen=True)
class TableRef:
    dsn: str
    schema: str | None
    table: str
    id_column: str
    column: str

    @classmethod
    def parse(cls, url: str, id_column: str | None = None, column: str | None = None) -> TableRef:
        """Split the facebridge parameters off a libpq URL (flags override the query's values)."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k in TABLE_PARAMETERS}
        rest = [(k, v) for k, v in query if k not in TABLE_PARAMETERS]
        table = ours.get("table")
        id_column = id_column or ours.get("id")
        column = column or ours.get("column")
        missing = [n for n, v in (("table", table), ("id", id_column), ("column", column)) if not v]
        if missing:
            raise TableError(
                f"the URL names no {', '.join(missing)}: add ?table=...&id=...&column=... "
                "(e.g. postgresql://user@host/db?table=faces&id=user_id&column=template)"
            )
        assert table and id_column and column
        schema, _, name = table.rpartition(".")
        dsn = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, urlencode(rest, quote_via=quote), parts.fragment)
        )
        return cls(dsn, schema or None, name, id_column, column)

    @property
    def where(self) -> str:
        """The DSN without its password, for messages."""
        parts = urlsplit(self.dsn)
        host = parts.hostname or "localhost"
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def identifier(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table) if self.schema else sql.Identifier(self.table)

    def check_target(self, to_column: str) -> None:
        """Refuse a target column that is the table's key or its source templates (either design)."""
        if to_column in (self.column, self.id_column):
            raise TableError(
                f"target column {to_column} is the table's key or template column: translations would "
                "overwrite it"
            )


@dataclass(frozen=True)
class TableColumns:
    """What the catalogue says about the table: its key's type, the template column's kind and the
    types of the columns a migration adds (None where a column does not exist yet)."""

    id_type: str
    kind: ColumnKind
    source_type: str
    existing: dict[str, str]
    rows_estimate: int

    def type_of(self, column: str) -> str | None:
        return self.existing.get(column)


def inspect_table(cursor: Any, ref: TableRef) -> TableColumns:
    """Read the catalogue; a missing table or column, a non-unique key or an unusable type is a
    TableError naming it."""
    cursor.execute("SELECT to_regclass(%s)::oid", (ref.identifier().as_string(cursor),))
    (oid,) = cursor.fetchone()
    if oid is None:
        raise TableError(f"no table {ref.qualified} in {ref.where}")
    cursor.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
        (oid,),
    )
    existing = dict(cursor.fetchall())
    for role, name in (("id", ref.id_column), ("column", ref.column)):
        if name not in existing:
            raise TableError(f"table {ref.qualified} has no column {name} (given as {role})")
    cursor.execute(
        "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = i.indkey[0] WHERE i.indrelid = %s AND i.indisunique AND i.indnatts = 1 "
        "AND i.indpred IS NULL AND a.attname = %s",
        (oid, ref.id_column),
    )
    (unique,) = cursor.fetchone()
    if not unique:
        raise TableError(
            f"{ref.qualified}.{ref.id_column} has no unique index: the migration walks the table by "
            "its key, so it must be a primary key or unique"
        )
    try:
        kind = ColumnKind.from_sql_type(existing[ref.column])
    except ValueError as exc:
        raise TableError(f"{ref.qualified}.{ref.column}: {exc}") from exc
    cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s", (oid,))
    (estimate,) = cursor.fetchone()
    return TableColumns(existing[ref.id_column], kind, existing[ref.column], existing, max(int(estimate), 0))
