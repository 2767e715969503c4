"""Gallery migration speed and memory: streaming CLI and Dask engine next to bare numpy, one run.

Writes a synthetic gallery of N unit-length 512-d float32 templates (faceplugin-mbf512 space) as .npy
and as Parquet (int64 id + embedding, 100k-row row groups) in both encodings the CLI reads: a fixed-size
list of float32 and fixed-size binary (raw little-endian float32). Each run reads its input cold (its
pages are evicted from the page cache first) and is timed in its own process with the peak RSS of its
whole process tree sampled every 0.2 s; numpy runs first and last, and ratios use its faster run:

- numpy: np.load(mmap) → chunked `x @ W + b`, row normalisation → an output .npy memmap;
- stream: `facebridge migrate` (Parquet in, Parquet parts out, id check at the end);
- dask: `facebridge migrate --engine dask` (LocalCluster, one worker per core).

    python benchmarks/migration.py [--rows 10000000] [--encoding list|binary] [--no-dask] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from facebridge.migration.galleries import embedding_column

ROOT = Path(__file__).resolve().parents[1]

SOURCE, TARGET = "faceplugin-mbf512", "arcface-mbf128"

NUMPY_BASELINE = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from facebridge.mapping.bank import MappingBank
from facebridge.vision.manifest import load_manifest
from pathlib import Path
root = Path(sys.argv[1])
bank = MappingBank.load(root / "mappings", load_manifest(root / "models" / "manifest.toml"))
m = bank.maps[(sys.argv[3], sys.argv[4])]
x = np.load(sys.argv[2], mmap_mode="r")
out = np.lib.format.open_memmap(sys.argv[5], mode="w+", dtype=np.float32, shape=(len(x), m.weight.shape[1]))
step = 50_000
for start in range(0, len(x), step):
    y = np.asarray(x[start:start + step]) @ m.weight + m.bias
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    out[start:start + step] = y
out.flush()
"""


def write_parquet(rows: int, parquet: Path, encoding: str, matrix: np.ndarray | None = None) -> None:
    """Write the gallery as Parquet (100k-row row groups); rows come from `matrix` when given."""
    rng = np.random.default_rng(0)
    kind = pa.binary(2048) if encoding == "binary" else pa.list_(pa.float32(), 512)
    schema = pa.schema([("id", pa.int64()), ("embedding", kind)])
    step = 100_000
    with pq.ParquetWriter(
        parquet, schema, compression="NONE", use_dictionary=False, write_statistics=False
    ) as w:
        for start in range(0, rows, step):
            n = min(step, rows - start)
            if matrix is None:
                x = rng.standard_normal((n, 512), dtype=np.float32)
                x /= np.linalg.norm(x, axis=1, keepdims=True)
            else:
                x = np.asarray(matrix[start : start + n])
            w.write_table(
                pa.table(
                    {
                        "id": np.arange(start, start + n, dtype=np.int64),
                        "embedding": embedding_column(x, encoding),
                    }
                )
            )


def write_npy(rows: int, npy: Path) -> None:
    """The same rows as `write_parquet` draws (same seed and order), as one .npy matrix."""
    rng = np.random.default_rng(0)
    matrix = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, 512))
    step = 100_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        x = rng.standard_normal((n, 512), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        matrix[start : start + n] = x
    matrix.flush()
    del matrix


def run_measured(command: list[str], cwd: Path = ROOT) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of the process tree, and its output (stdout and stderr, kept in a
    file so a chatty command never blocks on a full pipe). `cwd` is the tree whose code
    `python -m facebridge` runs (another checkout, for a baseline)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
        root = psutil.Process(process.pid)
        peak = 0.0
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed: {output[-2000:]}")
    return seconds, peak, output


def evict(*paths: Path) -> None:
    """Drop the files' pages from the page cache, so every run reads its input cold from disk."""
    for path in paths:
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/facebridge-migration-bench"))
    parser.add_argument(
        "--encoding", action="append", choices=["list", "binary"], help="gallery encodings (default both)"
    )
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask engine")
    parser.add_argument("--keep", action="store_true", help="keep the generated gallery and outputs")
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    npy = work / "gallery.npy"
    started = time.perf_counter()
    write_npy(args.rows, npy)
    print(f"gallery: {args.rows:,} x 512 float32 ({args.rows * 2048 / 2**30:.1f} GiB) .npy written in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip

    python = sys.executable
    migrate = [python, "-m", "facebridge", "migrate", "--source", SOURCE, "--target", TARGET, "--quiet"]
    numpy_run = [
        python,
        "-c",
        NUMPY_BASELINE,
        str(ROOT),
        str(npy),
        SOURCE,
        TARGET,
        str(work / "numpy-out.npy"),
    ]
    results: dict[str, tuple[float, float]] = {}

    def measure(name: str, command: list[str], inputs: list[Path]) -> None:
        evict(*inputs)
        results[name] = run_measured(command)[:2]
        print(f"{name}: {results[name][0]:.1f} s, peak RSS {results[name][1]:.0f} MiB", flush=True)

    measure("numpy (mmap .npy, chunked matmul)", numpy_run, [npy])
    for encoding in args.encoding or ["list", "binary"]:
        parquet = work / f"gallery-{encoding}.parquet"
        started = time.perf_counter()
        write_parquet(args.rows, parquet, encoding, np.load(npy, mmap_mode="r"))
        print(f"Parquet ({encoding}) written in {time.perf_counter() - started:.0f} s", flush=True)
        label = "fixed-size list" if encoding == "list" else "fixed-size binary"
        measure(
            f"facebridge migrate, {label} (stream)",
            [*migrate, str(parquet), str(work / "stream-out")],
            [parquet],
        )
        if not args.no_dask:
            measure(
                f"facebridge migrate --engine dask, {label}",
                [*migrate, "--engine", "dask", str(parquet), str(work / "dask-out")],
                [parquet],
            )
        if not args.keep:  # room on disk for the next encoding
            for leftover in (parquet, work / "stream-out", work / "dask-out"):
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(
                    missing_ok=True
                )

    # the baseline reads 19 GiB cold from disk, whose speed drifts: it runs first and last, and every
    # ratio is taken against its faster run (the conservative choice)
    measure("numpy again (after the migrations)", numpy_run, [npy])
    base = args.rows / min(
        results["numpy (mmap .npy, chunked matmul)"][0], results["numpy again (after the migrations)"][0]
    )
    print(f"\n{args.rows:,} templates, {SOURCE} (512-d) -> {TARGET} (128-d), cold page cache\n")
    print("| run | seconds | rows/s | vs numpy | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, (seconds, peak) in results.items():
        rate = args.rows / seconds
        print(f"| {name} | {seconds:.1f} | {rate:,.0f} | {rate / base:.2f}x | {peak:.0f} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
