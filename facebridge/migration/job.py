"""The migration job: stream a gallery through a map into Parquet parts, resumable after a crash.

OUTPUT is a folder: `part-NNNNNN.parquet` per input chunk (columns `id`, `embedding` as a fixed-size
list of float32, or fixed-size binary when the input was; `confidence`, float32, when every map of the
path carries a confidence predictor: each row's expected cosine with the target model's own embedding,
so the least reliable templates can be re-enrolled first; the maps' ids and tensor hashes in the schema
metadata) and `_facebridge_migration.json` describing the job. A part appears only by an atomic rename
once fully written, so after a crash every part present is whole: a resumed run skips them and writes
the rest (no duplicates, nothing lost). The job ends by checking that the parts hold exactly the input's
ids, in order, and only then marks the manifest complete. Memory is bounded by the chunk size, not the
gallery size.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from facebridge import __version__
from facebridge.mapping.bank import MapPath
from facebridge.migration.galleries import Gallery, embedding_column
from facebridge.migration.pipeline import prefetch
from facebridge.progress import bar_disabled

MANIFEST = "_facebridge_migration.json"
PIPELINE_DEPTH = 2
T = TypeVar("T")


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


@dataclass(frozen=True)
class MigrationResult:
    rows: int
    parts: int
    resumed_parts: int
    seconds: float
    output: Path


def job_description(gallery_path: Path, gallery: Gallery, path: MapPath, chunk_rows: int) -> dict[str, Any]:
    stat = gallery_path.stat()
    return {
        "format": 1,
        "input": str(gallery_path.resolve()),
        "input_bytes": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "rows": gallery.rows,
        "chunk_rows": chunk_rows,
        "source": path.source,
        "target": path.target,
        "maps": [
            {"id": m.id, "file": Path(m.file).name, "tensor_sha256": m.meta.tensor_sha256} for m in path.maps
        ],
        "confidence_column": path.has_confidence,
        "code_version": __version__,
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def migrate(
    gallery: Gallery,
    gallery_path: Path,
    path: MapPath,
    output: Path,
    chunk_rows: int = 50_000,
    progress: bool = True,
    on_part: Callable[[int], None] | None = None,
) -> MigrationResult:
    """Translate every row of `gallery` with `path` into Parquet parts under `output`."""
    if gallery.dim != path.maps[0].meta.source.dim:
        raise ValueError(
            f"gallery embeddings have {gallery.dim} values; {path.source} has {path.maps[0].meta.source.dim}"
        )
    started = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    manifest_path = output / MANIFEST
    plan = job_description(gallery_path, gallery, path, chunk_rows)
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        same = {k: previous.get(k) for k in plan if k not in ("chunk_rows", "code_version")}
        if same != {k: v for k, v in plan.items() if k not in ("chunk_rows", "code_version")}:
            raise ValueError(f"{output} holds a migration of another gallery or map; use an empty folder")
        chunk_rows = int(previous["chunk_rows"])  # cut exactly as the interrupted run did
        plan["chunk_rows"] = chunk_rows
    for leftover in output.glob("*.tmp"):
        leftover.unlink()
    _write_atomic(manifest_path, json.dumps({**plan, "state": "running"}, indent=2))

    n_chunks = -(-gallery.rows // chunk_rows)
    done = {i for i in range(n_chunks) if (output / part_name(i)).exists()}
    dim_out = path.maps[-1].meta.target.dim
    metadata = {b"facebridge": json.dumps({k: plan[k] for k in ("source", "target", "maps")}).encode()}
    bar = tqdm(
        total=gallery.rows,
        initial=min(len(done) * chunk_rows, gallery.rows),
        unit="row",
        unit_scale=True,
        desc=f"{path.source} -> {path.target}",
        disable=bar_disabled(progress),
    )
    with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="part-writer") as writer:
        pending: list[Future[int]] = []
        # reading/decoding the next chunk and writing the previous part overlap the map's matmul (both
        # release the GIL); at most `PIPELINE_DEPTH` chunks are held at once, so memory stays bounded
        for chunk in prefetch(gallery.chunks(chunk_rows, skip=done), PIPELINE_DEPTH):
            out = np.empty((len(chunk.embeddings), dim_out), dtype=np.float32)
            table = translated_table(path, chunk.ids, chunk.embeddings, out, gallery.encoding)
            pending.append(
                writer.submit(_write_part, table.replace_schema_metadata(metadata), output, chunk.index)
            )
            while len(pending) >= PIPELINE_DEPTH or (pending and pending[0].done()):
                index = pending.pop(0).result()
                bar.update(min(chunk_rows, gallery.rows - index * chunk_rows))
                if on_part is not None:
                    on_part(index)
        for future in pending:
            index = future.result()
            bar.update(min(chunk_rows, gallery.rows - index * chunk_rows))
            if on_part is not None:
                on_part(index)

    verify(gallery, output, chunk_rows, n_chunks)
    _write_atomic(manifest_path, json.dumps({**plan, "state": "complete", "parts": n_chunks}, indent=2))
    return MigrationResult(gallery.rows, n_chunks, len(done), time.perf_counter() - started, output)


def translated_table(
    path: MapPath, ids: pa.Array, embeddings: np.ndarray, out: np.ndarray, encoding: str
) -> pa.Table:
    """One part's columns: id, the translated embedding and, when the path has predictors, confidence."""
    if path.has_confidence:
        _, confidence = path.apply_with_confidence(embeddings, out)
    else:
        path.apply(embeddings, out)
        confidence = None
    columns, names = [ids, embedding_column(out, encoding)], ["id", "embedding"]
    if confidence is not None:
        columns.append(pa.array(confidence, type=pa.float32()))
        names.append("confidence")
    return pa.Table.from_arrays(columns, names=names)


def _write_part(table: pa.Table, output: Path, index: int) -> int:
    """Write one part under a temporary name, then rename: a part that exists is always whole."""
    final = output / part_name(index)
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(table, tmp, compression="NONE", use_dictionary=False, write_statistics=False)
    os.replace(tmp, final)
    return index


def verify(gallery: Gallery, output: Path, chunk_rows: int, n_chunks: int) -> None:
    """Every part present, row counts equal, ids identical and in the input's order."""
    rows = 0
    for index, ids in enumerate(gallery.id_chunks(chunk_rows)):
        part = output / part_name(index)
        if not part.exists():
            raise RuntimeError(f"{part} is missing")
        written = pq.read_table(part, columns=["id"]).column("id").combine_chunks()
        if not written.equals(ids.cast(written.type) if ids.type != written.type else ids):
            raise RuntimeError(f"{part}: ids differ from the input's rows {index * chunk_rows}…")
        rows += len(written)
    extra = sorted(p.name for p in output.glob("part-*.parquet") if int(p.stem.split("-")[1]) >= n_chunks)
    if rows != gallery.rows or extra:
        raise RuntimeError(f"{rows} rows written for {gallery.rows} input rows; unexpected parts: {extra}")
