"""Reading galleries of templates in fixed-size chunks, with bounded memory.

A gallery is an id per row and an embedding per row: a Parquet file (an id column and an embedding
column stored as a list / fixed-size list of floats, or as fixed-size binary of float32) or a .npy
matrix (ids are row numbers, or come from a second .npy). Chunk k is always rows
[k * chunk_rows, (k + 1) * chunk_rows), whatever the file's row groups, so a resumed job cuts the
gallery exactly as the first run did.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DECODE_THREADS = 2


@dataclass
class Chunk:
    index: int
    start: int
    ids: pa.Array
    embeddings: np.ndarray  # (n, dim) float32, C-contiguous


class Gallery(Protocol):
    rows: int
    dim: int
    encoding: str  # "list" or "binary": how the embedding column is stored, and will be written

    def chunks(self, chunk_rows: int, skip: set[int] | None = None) -> Iterator[Chunk]: ...

    def id_chunks(self, chunk_rows: int) -> Iterator[pa.Array]: ...


def embeddings_from_arrow(column: pa.Array | pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """(n, dim) float32 from a list, fixed-size list or fixed-size binary column (copy-free when possible)."""
    if isinstance(column, pa.ChunkedArray):  # one chunk is used as is: combining would copy it
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    kind = column.type
    if pa.types.is_fixed_size_binary(kind):
        width = kind.byte_width // 4
        raw = np.frombuffer(column.buffers()[1], dtype=np.float32)
        start = column.offset * width
        matrix = raw[start : start + len(column) * width].reshape(len(column), width)
    elif pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if column.null_count:
            raise ValueError("the embedding column has null rows")
        flat = column.flatten().to_numpy(zero_copy_only=False)
        width = kind.list_size if pa.types.is_fixed_size_list(kind) else (len(flat) // max(1, len(column)))
        if len(flat) != width * len(column):
            raise ValueError("embedding rows have different lengths")
        matrix = flat.reshape(len(column), width)
    else:
        raise ValueError(f"embedding column type {kind} is not a list of floats or fixed-size binary")
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(f"embeddings have {matrix.shape[1]} values, expected {dim}")
    return np.ascontiguousarray(matrix, dtype=np.float32)


def embedding_column(out: np.ndarray, encoding: str) -> pa.Array:
    """Translated rows as the output column: fixed-size binary (raw float32) when the input was
    binary, else a fixed-size list of float32. Binary needs no per-value levels, so it is cheaper to
    write and to read back."""
    out = np.ascontiguousarray(out, dtype="<f4")
    if encoding == "binary":
        return pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(out.shape[1] * 4), len(out), [None, pa.py_buffer(out)]
        )
    return pa.FixedSizeListArray.from_arrays(pa.array(out.reshape(-1)), out.shape[1])


class ParquetGallery:
    def __init__(self, path: Path, id_column: str = "id", embedding_column: str = "embedding"):
        self.path = path
        self.file = pq.ParquetFile(path)
        names = self.file.schema_arrow.names
        for column in (id_column, embedding_column):
            if column not in names:
                raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(names)})")
        self.id_column, self.embedding_column = id_column, embedding_column
        kind = self.file.schema_arrow.field(embedding_column).type
        self.encoding = "binary" if pa.types.is_fixed_size_binary(kind) else "list"
        self.rows = self.file.metadata.num_rows
        first = next(self.file.iter_batches(batch_size=1, columns=[embedding_column]), None)
        self.dim = embeddings_from_arrow(first.column(0)).shape[1] if first is not None else 0

    def chunks(self, chunk_rows: int, skip: set[int] | None = None) -> Iterator[Chunk]:
        skip = skip or set()
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        index = 0
        for batch in self._decoded_batches(min(chunk_rows, 65536)):
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= chunk_rows:
                table = pa.Table.from_batches(pending)
                head, tail = table.slice(0, chunk_rows), table.slice(chunk_rows)
                yield from self._chunk(index, head, chunk_rows, skip)
                index += 1
                pending, pending_rows = tail.to_batches(), tail.num_rows
        if pending_rows:
            yield from self._chunk(index, pa.Table.from_batches(pending), chunk_rows, skip)

    def _decoded_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Record batches in file order, with row groups decoded `DECODE_THREADS` at a time.

        Decoding the embedding column is the slowest step of a migration and pyarrow decodes one row
        group on one core; separate readers of consecutive row groups (GIL released) use the others.
        At most DECODE_THREADS row groups are held ahead, so memory stays bounded.
        """
        columns = [self.id_column, self.embedding_column]
        groups = self.file.num_row_groups

        def decode(group: int) -> list[pa.RecordBatch]:
            reader = pq.ParquetFile(self.path)
            return list(reader.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns))

        with ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="parquet-decode") as pool:
            ahead: deque[Future[list[pa.RecordBatch]]] = deque()
            for group in range(groups):
                ahead.append(pool.submit(decode, group))
                if len(ahead) >= DECODE_THREADS:
                    yield from ahead.popleft().result()
            while ahead:
                yield from ahead.popleft().result()

    def id_chunks(self, chunk_rows: int) -> Iterator[pa.Array]:
        """The id column alone, cut like `chunks` (for the final check, without reading embeddings)."""
        pending: list[pa.Array] = []
        pending_rows = 0
        for batch in self.file.iter_batches(batch_size=min(chunk_rows, 65536), columns=[self.id_column]):
            pending.append(batch.column(0))
            pending_rows += batch.num_rows
            while pending_rows >= chunk_rows:
                ids = pa.concat_arrays(pending)
                yield ids.slice(0, chunk_rows)
                rest = ids.slice(chunk_rows)
                pending, pending_rows = [rest], len(rest)
        if pending_rows:
            yield pa.concat_arrays(pending)

    def _chunk(self, index: int, table: pa.Table, chunk_rows: int, skip: set[int]) -> Iterator[Chunk]:
        if index in skip:
            return
        ids = table.column(self.id_column).combine_chunks()
        embeddings = embeddings_from_arrow(table.column(self.embedding_column), self.dim)
        yield Chunk(index, index * chunk_rows, ids, embeddings)


class NpyGallery:
    encoding = "list"

    def __init__(self, path: Path, ids_path: Path | None = None):
        self.path = path
        self.matrix = np.load(path, mmap_mode="r")
        if self.matrix.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D array, got shape {self.matrix.shape}")
        self.rows, self.dim = self.matrix.shape
        self.ids = np.load(ids_path, mmap_mode="r", allow_pickle=False) if ids_path is not None else None
        if self.ids is not None and len(self.ids) != self.rows:
            raise ValueError(f"{ids_path} has {len(self.ids)} ids for {self.rows} rows")

    def chunks(self, chunk_rows: int, skip: set[int] | None = None) -> Iterator[Chunk]:
        skip = skip or set()
        for index, start in enumerate(range(0, self.rows, chunk_rows)):
            if index in skip:
                continue
            stop = min(start + chunk_rows, self.rows)
            ids = pa.array(self.ids[start:stop]) if self.ids is not None else pa.array(np.arange(start, stop))
            embeddings = np.ascontiguousarray(self.matrix[start:stop], dtype=np.float32)
            yield Chunk(index, start, ids, embeddings)

    def id_chunks(self, chunk_rows: int) -> Iterator[pa.Array]:
        for start in range(0, self.rows, chunk_rows):
            stop = min(start + chunk_rows, self.rows)
            yield pa.array(self.ids[start:stop]) if self.ids is not None else pa.array(np.arange(start, stop))


def open_gallery(
    path: Path, id_column: str = "id", embedding_column: str = "embedding", ids_path: Path | None = None
) -> Gallery:
    if path.suffix == ".npy":
        return NpyGallery(path, ids_path)
    return ParquetGallery(path, id_column, embedding_column)
