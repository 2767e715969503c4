"""PostgreSQL's binary COPY format and the wire forms of a template column, decoded and encoded in numpy.

A migration moves templates through `COPY ... (FORMAT BINARY)` both ways: reading a `real[]` of 512
values as text would cost a float parse per value, and writing through parameters a Python object per
value. Binary COPY carries each value in its type's send format, which is also what the server hashes
(`array_send`, `vector_send`, the bytes of a `bytea`), so the client and the server can checksum the
very same bytes.

Column kinds:
- `real[]` / `double precision[]`: one-dimensional arrays without NULL elements;
- `vector`: pgvector's `vector(n)` (4-byte header: dimension, unused; then float4 big-endian);
- `bytea`: raw little-endian float32, 4·n bytes (the usual way templates are kept as blobs).

A batch of well-formed templates is a run of tuples of one width, so `fixed_rows` reads a whole stream
as one numpy record array and `fixed_copy` writes one from arrays, with no Python work per row; a
stream with a NULL or an odd-sized value falls back to `parse_copy` / `build_copy`.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
FLOAT4_OID, FLOAT8_OID = 700, 701
KINDS = ("real[]", "double precision[]", "vector", "bytea")
KEY_WIDTHS = {"smallint": 2, "integer": 4, "bigint": 8, "uuid": 16}  # keys of one binary width


class CopyFormatError(ValueError):
    """The server's COPY stream is not what binary COPY promises (a bug or a different protocol)."""


@dataclass(frozen=True)
class ColumnKind:
    """How a template column is stored: one of KINDS (`vector` also names its dimension when typed)."""

    name: str

    @classmethod
    def from_sql_type(cls, formatted: str) -> ColumnKind:
        """From `format_type(atttypid, atttypmod)`: 'real[]', 'vector(512)', 'bytea', ..."""
        base = formatted.split("(")[0].strip()
        if base not in KINDS:
            raise ValueError(f"a template column must be one of {', '.join(KINDS)}; this one is {formatted}")
        return cls(base)

    def sql_type(self, dim: int) -> str:
        """The column type a migration creates for `dim`-dimensional templates of this kind."""
        return f"vector({dim})" if self.name == "vector" else self.name

    def send_function(self) -> str | None:
        """The SQL function giving a value's binary form (None: a bytea is its own binary form)."""
        return {"vector": "vector_send", "bytea": None}.get(self.name, "array_send")

    def expected_length(self, dim: int) -> int:
        if self.name == "real[]":
            return 20 + 8 * dim
        if self.name == "double precision[]":
            return 20 + 12 * dim
        if self.name == "vector":
            return 4 + 4 * dim
        return 4 * dim

    def row_dtype(self, dim: int) -> np.dtype:
        """A numpy record of one well-formed value of `dim` elements, for decoding a batch at once."""
        if self.name in ("real[]", "double precision[]"):
            width = ">f4" if self.name == "real[]" else ">f8"
            head = [("ndim", ">i4"), ("flags", ">i4"), ("elem", ">i4"), ("dim", ">i4"), ("lbound", ">i4")]
            return np.dtype([*head, ("values", [("length", ">i4"), ("x", width)], (dim,))])
        if self.name == "vector":
            return np.dtype([("dim", ">i2"), ("unused", ">i2"), ("x", ">f4", (dim,))])
        return np.dtype([("x", "<f4", (dim,))])


# ------------------------------------------------------------------------------------------- COPY streams
def parse_copy(data: bytes | bytearray | memoryview, fields: int) -> list[list[bytes | None]]:
    """The tuples of a binary COPY stream (header to trailer), each as `fields` values (None: NULL)."""
    view = memoryview(data)
    if bytes(view[: len(SIGNATURE)]) != SIGNATURE:
        raise CopyFormatError("not a binary COPY stream (signature missing)")
    (extension,) = struct.unpack_from(">i", view, len(SIGNATURE) + 4)
    offset = len(SIGNATURE) + 8 + extension
    unpack_short, unpack_int = struct.Struct(">h").unpack_from, struct.Struct(">i").unpack_from
    rows: list[list[bytes | None]] = []
    while True:
        (count,) = unpack_short(view, offset)
        offset += 2
        if count == -1:
            return rows
        if count != fields:
            raise CopyFormatError(f"a tuple of {count} fields where {fields} were selected")
        row: list[bytes | None] = []
        for _ in range(count):
            (length,) = unpack_int(view, offset)
            offset += 4
            if length < 0:
                row.append(None)
            else:
                row.append(bytes(view[offset : offset + length]))
                offset += length
        rows.append(row)


def build_copy(rows: Sequence[Sequence[bytes | None]]) -> bytes:
    """A binary COPY stream of `rows` whose values are already in their types' binary forms."""
    return HEADER + copy_tuples(rows) + TRAILER


def copy_tuples(rows: Sequence[Sequence[bytes | None]]) -> bytes:
    """The tuples of a binary COPY stream (no header, no trailer), one value at a time."""
    pack_short, pack_int = struct.Struct(">h").pack, struct.Struct(">i").pack
    null = pack_int(-1)
    pieces: list[bytes] = []
    for row in rows:
        pieces.append(pack_short(len(row)))
        for value in row:
            if value is None:
                pieces.append(null)
            else:
                pieces.append(pack_int(len(value)))
                pieces.append(value)
    return b"".join(pieces)


def fixed_rows(
    data: bytes | bytearray | memoryview, fields: Sequence[tuple[str, np.dtype]]
) -> np.ndarray | None:
    """A binary COPY stream as one record array (`count`, then `NAME_length` and `NAME` per field) when
    every tuple holds `fields` with none NULL and each exactly its dtype's size; None otherwise (a NULL,
    another length: use `parse_copy`). The array is a read-only view of `data`."""
    view = memoryview(data)
    if bytes(view[: len(SIGNATURE)]) != SIGNATURE:
        raise CopyFormatError("not a binary COPY stream (signature missing)")
    (extension,) = struct.unpack_from(">i", view, len(SIGNATURE) + 4)
    start = len(SIGNATURE) + 8 + extension
    if bytes(view[-2:]) != TRAILER:
        return None
    layout: list[tuple[str, np.dtype]] = [("count", np.dtype(">i2"))]
    for name, dtype in fields:
        layout += [(f"{name}_length", np.dtype(">i4")), (name, np.dtype(dtype))]
    record = np.dtype(layout)
    body = view[start : len(view) - 2]
    if len(body) % record.itemsize:
        return None
    rows = np.frombuffer(body, dtype=record)
    if not (rows["count"] == len(fields)).all():
        return None
    for name, dtype in fields:
        if not (rows[f"{name}_length"] == np.dtype(dtype).itemsize).all():
            return None
    return rows


def fixed_copy(columns: Sequence[np.ndarray]) -> bytes:
    """The tuples (no header, no trailer) of a binary COPY stream whose every value is fixed-width:
    column i gives the i-th value of each row, already in its binary form (big-endian numbers, the
    records of `row_dtype`, raw bytes as `V` items)."""
    n = len(columns[0]) if columns else 0
    layout: list[tuple[str, np.dtype]] = [("count", np.dtype(">i2"))]
    for i, column in enumerate(columns):
        layout += [(f"length{i}", np.dtype(">i4")), (f"value{i}", column.dtype)]
    rows = np.empty(n, dtype=np.dtype(layout))
    rows["count"] = len(columns)
    for i, column in enumerate(columns):
        rows[f"length{i}"] = column.dtype.itemsize
        rows[f"value{i}"] = column
    return rows.tobytes()


def key_text(raw: bytes, id_type: str) -> str:
    """A key of one of KEY_WIDTHS's types, from its binary form to its text form."""
    if id_type == "uuid":
        return str(uuid.UUID(bytes=bytes(raw)))
    return str(int.from_bytes(raw, "big", signed=True))


# ------------------------------------------------------------------------------------------- templates
@dataclass
class DecodedBatch:
    """Templates of a batch: `matrix` holds the rows listed in `good` (indices into the batch), in
    order; `problems` maps the other indices to why they cannot be translated."""

    matrix: np.ndarray
    good: np.ndarray
    problems: dict[int, str]


def decode_templates(values: Sequence[bytes | None], kind: ColumnKind, dim: int) -> DecodedBatch:
    """Decode one batch of a template column, rejecting (with a reason) NULL, malformed, wrongly sized
    and non-finite values. Well-formed values are decoded together in one numpy view."""
    expected = kind.expected_length(dim)
    problems: dict[int, str] = {}
    candidates: list[int] = []
    for index, value in enumerate(values):
        if value is None:
            problems[index] = "NULL"
        elif len(value) != expected:
            problems[index] = describe_malformed(value, kind, dim)
        else:
            candidates.append(index)
    records = np.frombuffer(b"".join(values[i] or b"" for i in candidates), dtype=kind.row_dtype(dim))
    matrix, keep, reasons = decode_records(records, kind, dim)
    for position, reason in reasons.items():
        index = candidates[position]
        problems[index] = reason if reason else describe_malformed(values[index] or b"", kind, dim)
    good = np.asarray(candidates, dtype=np.int64)[keep]
    return DecodedBatch(matrix[keep], good, problems)


def decode_records(
    records: np.ndarray, kind: ColumnKind, dim: int
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Values of the right length as records of `kind.row_dtype(dim)`: (float32 matrix of every
    record, which records are good, reason per bad record; '' where `describe_malformed` says why)."""
    if kind.name in ("real[]", "double precision[]"):
        element = FLOAT4_OID if kind.name == "real[]" else FLOAT8_OID
        width = 4 if kind.name == "real[]" else 8
        header_ok = (
            (records["ndim"] == 1)
            & (records["flags"] == 0)
            & (records["elem"] == element)
            & (records["dim"] == dim)
            & (records["values"]["length"] == width).all(axis=1)
        )
        matrix = records["values"]["x"]
    elif kind.name == "vector":
        header_ok = records["dim"] == dim
        matrix = records["x"]
    else:
        header_ok = np.ones(len(records), dtype=bool)
        matrix = records["x"]
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    finite = np.isfinite(matrix).all(axis=1) if len(matrix) else np.ones(0, dtype=bool)
    reasons: dict[int, str] = {}
    for position in np.flatnonzero(~header_ok).tolist():
        reasons[position] = ""
    for position in np.flatnonzero(header_ok & ~finite).tolist():
        reasons[position] = "non-finite values (NaN or infinity)"
    return matrix, header_ok & finite, reasons


def describe_malformed(value: bytes, kind: ColumnKind, dim: int) -> str:
    """Why a value of the right type is not a `dim`-dimensional template, in words."""
    if kind.name in ("real[]", "double precision[]"):
        if len(value) < 12:
            return "malformed array"
        ndim, flags, _ = struct.unpack_from(">iii", value, 0)
        if ndim == 0:
            return "empty array"
        if ndim != 1:
            return f"{ndim}-dimensional array, expected a 1-dimensional one"
        if flags & 1:
            return "array holds NULL elements"
        (length,) = struct.unpack_from(">i", value, 12)
        return f"dimension {length}, expected {dim}"
    if kind.name == "vector":
        (length,) = struct.unpack_from(">h", value, 0) if len(value) >= 2 else (-1,)
        return f"dimension {length}, expected {dim}"
    if len(value) % 4:
        return f"{len(value)} bytes, not a whole number of float32 values"
    return f"dimension {len(value) // 4} ({len(value)} bytes), expected {dim} float32 values"


def encode_templates(matrix: np.ndarray, kind: ColumnKind) -> list[bytes]:
    """Each row of `matrix` in the binary form of `kind` (what COPY sends and the server hashes)."""
    records = encode_records(matrix, kind)
    buffer = records.tobytes()
    width = records.dtype.itemsize
    return [buffer[i * width : (i + 1) * width] for i in range(len(records))]


def encode_records(matrix: np.ndarray, kind: ColumnKind) -> np.ndarray:
    """The rows of `matrix` as records of `kind.row_dtype` (each one value's binary form)."""
    n, dim = matrix.shape
    records = np.zeros(n, dtype=kind.row_dtype(dim))
    if kind.name in ("real[]", "double precision[]"):
        records["ndim"], records["flags"], records["dim"], records["lbound"] = 1, 0, dim, 1
        records["elem"] = FLOAT4_OID if kind.name == "real[]" else FLOAT8_OID
        records["values"]["length"] = 4 if kind.name == "real[]" else 8
        records["values"]["x"] = matrix
    elif kind.name == "vector":
        records["dim"] = dim
        records["x"] = matrix
    else:
        records["x"] = matrix
    return records


def digest(value: bytes | None) -> bytes:
    """A template's fingerprint as the server computes it: md5 of its binary form ('' for NULL)."""
    return b"" if value is None else hashlib.md5(value).digest()


def row_hash(value: bytes) -> int:
    """A signed 64-bit hash of one binary value; per-batch sums of these are the migration's checksums
    (order-free, so rows taken over by a later batch can be subtracted exactly)."""
    return int.from_bytes(hashlib.md5(value).digest()[:8], "big", signed=True)


def float4(values: np.ndarray) -> list[bytes]:
    """float32 values as `real` in binary form."""
    return [bytes(b) for b in np.asarray(values, dtype=">f4").reshape(-1, 1).view(np.uint8)]
