"""PostgreSQL migrations next to the Parquet one, on the same templates, in one run: the in-place design
(before) and the staged one (after) with 1, 2 and 4 workers.

N unit-length 512-d float32 templates (faceplugin-mbf512 space, to arcface-mbf128 with the shipped map)
are written once as Parquet (fixed-size list, as benchmarks/migration.py) and loaded into a throw-away
PostgreSQL server (tests/postgres_server.py: initdb in a temp dir, default settings but for
max_wal_size, raised as a DBA would for a bulk backfill) as one table per column kind: `real[]`,
`bytea` and, where pgvector is installed, `vector(512)`; a server-side copy of each table serves the
in-place design, so both designs start from a freshly loaded table. Then, each command in its own
process with the peak RSS of its process tree sampled every 0.2 s:

- `facebridge migrate ... gallery.parquet OUT` (Parquet parts out);
- `facebridge migrate ... postgresql://...?table=faces_<kind>&id=user_id&column=template
  --to-column template_b --design in-place` and then the same with `--swap` (before);
- the same with `--design staged --workers 4`, then `--workers 2` (the side table and the job's rows
  dropped after each: the staged design leaves the table itself untouched until the swap), then
  `--workers 1` followed by `--swap` (after).

The ratios divide the Parquet run's seconds by the PostgreSQL migration's (`migrate`) and by the
migration and its swap together (`+ swap`): the staged design writes the table in its swap. The Parquet
migration runs first and again last, because the machine's speed drifts (other jobs share it); the
ratios use its faster run, the one least favourable to PostgreSQL.

    python benchmarks/migrate_postgres.py [--rows 1000000] [--kinds real[],bytea,vector]
        [--batch-rows 10000] [--workers 1,2,4] [--designs in-place,staged] [--baseline-tree DIR]

With `--baseline-tree` (an exported older commit, `git archive COMMIT | tar -x -C DIR`), each column
kind's one-worker staged migration also runs with that tree's code, just before this tree's, on the
same table (its side table and job rows dropped after it): a before/after in one run.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.migration import run_measured  # noqa: E402
from facebridge.migration import pg_codec  # noqa: E402
from facebridge.migration.galleries import embedding_column  # noqa: E402
from facebridge.migration.pg_common import BATCHES, JOBS, PARTS, PROBLEMS  # noqa: E402
from facebridge.migration.postgres import SIDE_PREFIX  # noqa: E402
from tests.postgres_server import PostgresCluster  # noqa: E402

SOURCE, TARGET = "faceplugin-mbf512", "arcface-mbf128"
DIM = 512
CHUNK = 50_000


@dataclass
class Run:
    gallery: str
    design: str
    workers: int | None
    seconds: float
    peak: float
    load: float | None = None
    swap: float | None = None
    check: str = ""


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


def copy_table(dsn: str, kind: str) -> str:
    """A server-side copy of `faces_<kind>` (for the in-place design), vacuumed like the original."""
    import psycopg

    name, copy = table_name(kind), table_name(kind) + "_in_place"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {copy}")
        conn.execute(f"CREATE TABLE {copy} (LIKE {name} INCLUDING ALL)")
        conn.execute(f"INSERT INTO {copy} SELECT * FROM {name}")
        conn.execute(f"VACUUM ANALYZE {copy}")
        conn.execute("CHECKPOINT")
    return copy


def check_line(output: str) -> str:
    """The `checked: ...` line a PostgreSQL migration ends with (every run must print one)."""
    return next(line for line in output.splitlines() if line.startswith("checked"))


def table_name(kind: str) -> str:
    return "faces_" + kind.replace("[]", "_array").replace(" ", "_")


def forget_job(dsn: str, table: str) -> None:
    """Drop a staged job's side table and its rows in the progress tables (the table is untouched)."""
    import psycopg

    job = f"{table}.template->template_b"
    side = SIDE_PREFIX + hashlib.md5(job.encode()).hexdigest()[:12]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {side}")
        for progress in (JOBS, BATCHES, PROBLEMS, PARTS):
            conn.execute(f"DELETE FROM {progress} WHERE job = %s", (job,))
        conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kinds", default="real[],bytea,vector")
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2,4", help="the staged design's worker counts")
    parser.add_argument("--designs", default="in-place,staged")
    parser.add_argument("--baseline-tree", type=Path, help="an older checkout run beside this one (x1)")
    args = parser.parse_args()
    worker_counts = sorted({int(w) for w in args.workers.split(",")}, reverse=True)
    designs = args.designs.split(",")
    facebridge = [sys.executable, "-m", "facebridge", "migrate", "--source", SOURCE, "--target", TARGET]
    facebridge.append("--quiet")
    work = Path(tempfile.mkdtemp(prefix="facebridge-pg-bench-"))
    cluster = PostgresCluster()
    runs: list[Run] = []
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
        runs.append(Run("Parquet (fixed-size list) -> Parquet parts", "-", None, seconds, peak))
        print(f"parquet: {seconds:.1f} s", flush=True)
        shutil.rmtree(work / "parts")
        for kind in args.kinds.split(","):
            if kind == "vector" and not has_vector:
                print("pgvector is not installed: skipping vector(512) (scripts/install_pgvector.sh)")
                continue
            gallery = f"PostgreSQL `{pg_codec.ColumnKind(kind).sql_type(DIM)}`"
            load = load_table(cluster.dsn(), args.rows, kind)
            options = ["--to-column", "template_b", "--batch-rows", str(args.batch_rows)]
            if "in-place" in designs:
                copy = copy_table(cluster.dsn(), kind)
                url = f"{cluster.dsn()}?table={copy}&id=user_id&column=template"
                command = [*facebridge, url, *options, "--design", "in-place"]
                seconds, peak, output = run_measured(command)
                check = check_line(output)
                swapped_in, _, _ = run_measured([*command, "--swap"])
                runs.append(Run(gallery, "in-place", 1, seconds, peak, load, swapped_in, check))
                print(f"{kind} in place: {seconds:.1f} s, swap {swapped_in:.1f} s ({check})", flush=True)
                with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                    conn.execute(f"DROP TABLE {copy}")
                    conn.execute("CHECKPOINT")
            if "staged" in designs:
                url = f"{cluster.dsn()}?table={table_name(kind)}&id=user_id&column=template"
                for workers in worker_counts:
                    command = [*facebridge, url, *options, "--workers", str(workers)]
                    if workers == 1 and args.baseline_tree is not None:
                        seconds, peak, output = run_measured(command, cwd=args.baseline_tree)
                        check = check_line(output)
                        forget_job(cluster.dsn(), table_name(kind))
                        runs.append(Run(gallery, "staged, baseline", 1, seconds, peak, load, None, check))
                        print(f"{kind} staged x1, baseline: {seconds:.1f} s ({check})", flush=True)
                    seconds, peak, output = run_measured(command)
                    check = check_line(output)
                    swap: float | None = None
                    if workers == 1:
                        swap, _, _ = run_measured([*command, "--swap"])
                    else:
                        forget_job(cluster.dsn(), table_name(kind))
                    runs.append(Run(gallery, "staged", workers, seconds, peak, load, swap, check))
                    swapped = f", swap {swap:.1f} s" if swap is not None else ""
                    print(f"{kind} staged x{workers}: {seconds:.1f} s{swapped} ({check})", flush=True)
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute(f"DROP TABLE {table_name(kind)}")
                conn.execute("CHECKPOINT")
        seconds, peak, _ = run_measured([*facebridge, str(parquet), str(work / "parts")])
        runs.append(Run("Parquet again, after the PostgreSQL runs", "-", None, seconds, peak))
        print(f"parquet again: {seconds:.1f} s", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_tables(runs, args, worker_counts)


def print_tables(runs: list[Run], args: argparse.Namespace, worker_counts: list[int]) -> None:
    base = min(r.seconds for r in runs if r.workers is None)  # the faster Parquet run
    print(f"\n{args.rows:,} templates, {SOURCE} -> {TARGET}, batches of {args.batch_rows:,} rows")
    print("command: python benchmarks/migrate_postgres.py " + " ".join(sys.argv[1:]) + "\n")
    print(
        "| gallery | design | workers | migrate s | rows/s | --swap s | migrate + swap s "
        "| vs Parquet (migrate) | vs Parquet (+ swap) | peak RSS MiB | load (COPY) s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        total = run.seconds + run.swap if run.swap is not None else None
        cells = [
            run.gallery, run.design, "-" if run.workers is None else str(run.workers),
            f"{run.seconds:.1f}", f"{args.rows / run.seconds:,.0f}",
            "-" if run.swap is None else f"{run.swap:.1f}", "-" if total is None else f"{total:.1f}",
            f"{base / run.seconds:.2f}x", "-" if total is None else f"{base / total:.2f}x",
            f"{run.peak:.0f}", "-" if run.load is None else f"{run.load:.1f}",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    # the ratios side by side: one row per column kind
    swap_of = {r.gallery: r.swap for r in runs if r.design == "staged" and r.workers == 1}
    header = ["gallery", "before: in place (+ swap)"]
    header += [f"after: staged x{w}" for w in sorted(worker_counts)]
    header += ["after: staged x1 + swap"]
    baseline = {r.gallery: r for r in runs if r.design == "staged, baseline"}
    header += ["baseline tree: staged x1"] if baseline else []
    print("\n| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for gallery in dict.fromkeys(r.gallery for r in runs if r.workers is not None):
        cells = [gallery]
        before = [r for r in runs if r.gallery == gallery and r.design == "in-place"]
        before_swap = before[0].swap if before else None
        if before and before_swap is not None:
            run = before[0]
            cells.append(f"{base / run.seconds:.2f}x ({base / (run.seconds + before_swap):.2f}x)")
        else:
            cells.append("-")
        for workers in sorted(worker_counts):
            found = [
                r for r in runs if r.gallery == gallery and r.design == "staged" and r.workers == workers
            ]
            cells.append(f"{base / found[0].seconds:.2f}x" if found else "-")
        staged_one = [r for r in runs if r.gallery == gallery and r.design == "staged" and r.workers == 1]
        swap = swap_of.get(gallery)
        if staged_one and swap is not None:
            cells.append(f"{base / (staged_one[0].seconds + swap):.2f}x")
        else:
            cells.append("-")
        if baseline:
            cells.append(f"{base / baseline[gallery].seconds:.2f}x" if gallery in baseline else "-")
        print("| " + " | ".join(cells) + " |")
    print()
    for run in runs:
        if run.workers is not None:
            print(f"{run.gallery} {run.design} x{run.workers}: {run.check}")


if __name__ == "__main__":
    main()
