"""The migration job on Dask: Parquet partitions translated by workers, on a LocalCluster by default or
on any scheduler (`--scheduler tcp://host:8786`), so a user with a cluster runs it unchanged.

Each partition is written by the worker that translates it, as `part-NNNNNN.parquet` by an atomic rename
(the same columns as the streaming job's, `confidence` included when the path has predictors);
a partition whose part exists is skipped, so a killed run resumes. The driver then checks that the parts
hold the input's ids in order, as the streaming job does.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facebridge.mapping.bank import MapPath
from facebridge.migration.galleries import ParquetGallery, embeddings_from_arrow
from facebridge.migration.job import (
    MANIFEST,
    MigrationResult,
    _write_atomic,
    job_description,
    part_name,
    translated_table,
)


def _translate_partition(
    frame: pd.DataFrame,
    path: MapPath,
    output: str,
    id_column: str,
    embedding_column: str,
    metadata: dict[bytes, bytes],
    partition_info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    index = int(partition_info["number"]) if partition_info else 0
    final = Path(output) / part_name(index)
    if not final.exists() and len(frame):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        column = table.column(embedding_column)
        embeddings = embeddings_from_arrow(column)
        out = np.empty((len(embeddings), path.maps[-1].meta.target.dim), dtype=np.float32)
        encoding = "binary" if pa.types.is_fixed_size_binary(column.type) else "list"
        ids = table.column(id_column).combine_chunks()
        result = translated_table(path, ids, embeddings, out, encoding).replace_schema_metadata(metadata)
        tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
        pq.write_table(result, tmp, compression="NONE", use_dictionary=False, write_statistics=False)
        os.replace(tmp, final)
    return pd.DataFrame({"partition": [index], "rows": [len(frame)]})


def migrate_dask(
    gallery_path: Path,
    path: MapPath,
    output: Path,
    id_column: str = "id",
    embedding_column: str = "embedding",
    scheduler: str | None = None,
    workers: int | None = None,
) -> MigrationResult:
    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster

    started = time.perf_counter()
    gallery = ParquetGallery(gallery_path, id_column, embedding_column)
    if gallery.dim != path.maps[0].meta.source.dim:
        needed = path.maps[0].meta.source.dim
        raise ValueError(f"gallery embeddings have {gallery.dim} values; {path.source} needs {needed}")
    output.mkdir(parents=True, exist_ok=True)
    plan = {**job_description(gallery_path, gallery, path, 0), "engine": "dask"}
    _write_atomic(output / MANIFEST, json.dumps({**plan, "state": "running"}, indent=2))
    for leftover in output.glob("*.tmp"):
        leftover.unlink()
    done_before = len(list(output.glob("part-*.parquet")))
    metadata = {b"facebridge": json.dumps({k: plan[k] for k in ("source", "target", "maps")}).encode()}

    cluster = (
        None if scheduler else LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1)
    )
    with Client(scheduler or cluster) as client:
        frame = dd.read_parquet(
            str(gallery_path),
            columns=[id_column, embedding_column],
            split_row_groups=True,
            dtype_backend="pyarrow",
        )
        counts = frame.map_partitions(
            _translate_partition,
            path,
            str(output),
            id_column,
            embedding_column,
            metadata,
            meta=pd.DataFrame({"partition": pd.Series(dtype="int64"), "rows": pd.Series(dtype="int64")}),
        ).compute()
        client.close()
    if cluster is not None:
        cluster.close()
    parts = len(counts)
    verify_parts(gallery, output, parts)
    _write_atomic(output / MANIFEST, json.dumps({**plan, "state": "complete", "parts": parts}, indent=2))
    return MigrationResult(gallery.rows, parts, done_before, time.perf_counter() - started, output)


def verify_parts(gallery: ParquetGallery, output: Path, parts: int) -> None:
    """The parts, read in order, hold exactly the input's ids in order."""
    expected = next(gallery.id_chunks(max(1, gallery.rows)), pa.array([]))
    position = 0
    for index in range(parts):
        part = output / part_name(index)
        if not part.exists():
            raise RuntimeError(f"{part} is missing")
        written = pq.read_table(part, columns=["id"]).column("id").combine_chunks()
        if not written.equals(expected.slice(position, len(written)).cast(written.type)):
            raise RuntimeError(f"{part}: ids differ from input rows {position}…")
        position += len(written)
    if position != gallery.rows:
        raise RuntimeError(f"{position} rows written for {gallery.rows} input rows")
