"""In-place PostgreSQL migration next to the Parquet one, on the same templates, in one run.

N unit-length 512-d float32 templates (faceplugin-mbf512 space, to arcface-mbf128 with the shipped map)
are written once as Parquet (fixed-size list, as benchmarks/migration.py) and loaded into a throw-away
PostgreSQL server (tests/postgres_server.py: initdb in a temp dir, default settings but for
max_wal_size, raised as a DBA would for a bulk backfill) as one table per column kind: `real[]`,
`bytea` and, where pgvector is installed, `vector(512)`. Then, each in its own process with its peak
RSS sampled every 0.2 s:

- `facebridge migrate ... gallery.parquet OUT` (Parquet parts out);
- `facebridge migrate ... postgresql://...?table=faces_<kind>&id=user_id&column=template
  --to-column template_b` (new column filled in place, with confidence, checksums and the final check),
  then the same with `--swap` (the switch-over transaction: writers wait while it looks again for rows
  changed since, repeats the full check and renames the columns).

    python benchmarks/migrate_postgres.py [--rows 1000000] [--kinds real[],bytea,vector] [--batch-rows 10000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.migration import run_measured  # noqa: E402
from facebridge.migration import pg_codec  # noqa: E402
from facebridge.migration.galleries import embedding_column  # noqa: E402
from tests.postgres_server import PostgresCluster  # noqa: E402

SOURCE, TARGET = "faceplugin-mbf512", "arcface-mbf128"
DIM = 512
CHUNK = 50_000


def templates(rows: int, start: int) -> np.ndarray:
    x = np.random.default_rng(start).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_parquet(rows: int, path: Path) -> None:
    writer = None
    for start in range(0, rows, CHUNK):
        x = templates(min(CHUNK, rows - start), start)
        ids = pa.array(np.arange(start, start + len(x), dtype=np.int64))
        table = pa.Table.from_arrays([ids, embedding_column(x, "list")], names=["id", "embedding"])
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
    assert writer is not None
    writer.close()


def load_table(dsn: str, rows: int, kind: str) -> float:
    """The same templates as the Parquet file, into `faces_<kind>` through binary COPY; returns seconds."""
    import psycopg

    name = table_name(kind)
    column = pg_codec.ColumnKind(kind).sql_type(DIM)
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"CREATE TABLE {name} (user_id bigint PRIMARY KEY, template {column} NOT NULL)")
        for start in range(0, rows, CHUNK):
            x = templates(min(CHUNK, rows - start), start)
            values = pg_codec.encode_templates(x, pg_codec.ColumnKind(kind))
            keys = [int(k).to_bytes(8, "big", signed=True) for k in range(start, start + len(x))]
            with conn.cursor().copy(f"COPY {name} FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(pg_codec.build_copy(list(zip(keys, values, strict=True))))
        conn.execute(f"VACUUM ANALYZE {name}")
    return time.perf_counter() - started


def table_name(kind: str) -> str:
    return "faces_" + kind.replace("[]", "_array").replace(" ", "_")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kinds", default="real[],bytea,vector")
    parser.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args()
    facebridge = [
        sys.executable,
        "-m",
        "facebridge",
        "migrate",
        "--source",
        SOURCE,
        "--target",
        TARGET,
        "--quiet",
    ]
    work = Path(tempfile.mkdtemp(prefix="facebridge-pg-bench-"))
    cluster = PostgresCluster()
    rows: list[tuple[str, float, float, float | None, float | None, str]] = []
    try:
        import psycopg

        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
            conn.execute("SELECT pg_reload_conf()")
            has_vector = True
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error:
                has_vector = False
        parquet = work / "gallery.parquet"
        write_parquet(args.rows, parquet)
        seconds, peak, _ = run_measured([*facebridge, str(parquet), str(work / "parts")])
        rows.append(("Parquet (fixed-size list) -> Parquet parts", seconds, peak, None, None, ""))
        print(f"parquet: {seconds:.1f} s", flush=True)
        shutil.rmtree(work / "parts")
        for kind in args.kinds.split(","):
            if kind == "vector" and not has_vector:
                print("pgvector is not installed: skipping vector(512) (scripts/install_pgvector.sh)")
                continue
            load = load_table(cluster.dsn(), args.rows, kind)
            url = f"{cluster.dsn()}?table={table_name(kind)}&id=user_id&column=template"
            command = [*facebridge, url, "--to-column", "template_b", "--batch-rows", str(args.batch_rows)]
            seconds, peak, output = run_measured(command)
            check = next(line for line in output.splitlines() if line.startswith("checked"))
            swap, _, _ = run_measured([*command, "--swap"])
            name = f"PostgreSQL {pg_codec.ColumnKind(kind).sql_type(DIM)} -> new column"
            rows.append((name, seconds, peak, load, swap, check))
            print(f"{kind}: {seconds:.1f} s, swap {swap:.1f} s ({check})", flush=True)
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute(f"DROP TABLE {table_name(kind)}")
                conn.execute("CHECKPOINT")
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][1]
    print(f"\n{args.rows:,} templates, {SOURCE} -> {TARGET}, batches of {args.batch_rows:,} rows\n")
    print("| gallery | seconds | rows/s | vs Parquet | peak RSS MiB | load (COPY) s | --swap s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, seconds, peak, loaded, swapped, _ in rows:
        load_text = f"{loaded:.1f}" if loaded is not None else "-"
        swap_text = f"{swapped:.1f}" if swapped is not None else "-"
        print(
            f"| {name} | {seconds:.1f} | {args.rows / seconds:,.0f} | {base / seconds:.2f}x "
            f"| {peak:.0f} | {load_text} | {swap_text} |"
        )
    for name, _, _, _, _, check in rows[1:]:
        print(f"{name}: {check}")


if __name__ == "__main__":
    main()
