"""Gallery migration speed and memory: streaming CLI and Dask engine next to bare numpy, one run.

Writes a synthetic gallery of N unit-length 512-d float32 templates (faceplugin-mbf512 space) as
Parquet (int64 id + fixed-size list embedding, 100k-row row groups) and the same matrix as .npy, then
times, each in its own process with the peak RSS of its whole process tree sampled every 0.2 s:

- numpy: np.load(mmap) → chunked `x @ W + b`, row normalisation → an output .npy memmap;
- stream: `facebridge migrate` (Parquet in, Parquet parts out, id check at the end);
- dask: `facebridge migrate --engine dask` (LocalCluster, one worker per core).

    python benchmarks/migration.py [--rows 10000000] [--workdir /tmp/facebridge-migration-bench] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SOURCE, TARGET = "faceplugin-mbf512", "arcface-mbf128"

NUMPY_BASELINE = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from app.mapping.bank import MappingBank
from app.vision.manifest import load_manifest
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


def write_gallery(rows: int, parquet: Path, npy: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, 512))
    schema = pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32(), 512))])
    step = 100_000
    with pq.ParquetWriter(
        parquet, schema, compression="NONE", use_dictionary=False, write_statistics=False
    ) as w:
        for start in range(0, rows, step):
            n = min(step, rows - start)
            x = rng.standard_normal((n, 512), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            matrix[start : start + n] = x
            embedding = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 512)
            w.write_table(
                pa.table({"id": np.arange(start, start + n, dtype=np.int64), "embedding": embedding})
            )
    matrix.flush()
    del matrix


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the process tree."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    if process.returncode != 0:
        raise RuntimeError(
            f"{command[:4]} failed: {process.stderr.read().decode()[-2000:] if process.stderr else ''}"
        )
    return seconds, peak


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/facebridge-migration-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the generated gallery and outputs")
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    parquet, npy = work / "gallery.parquet", work / "gallery.npy"
    started = time.perf_counter()
    write_gallery(args.rows, parquet, npy)
    print(f"gallery: {args.rows:,} x 512 float32 ({args.rows * 2048 / 2**30:.1f} GiB) written in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip

    python = sys.executable
    migrate = [python, "-m", "app", "migrate", "--source", SOURCE, "--target", TARGET, "--quiet"]
    runs = {
        "numpy (mmap .npy, chunked matmul)": [
            python, "-c", NUMPY_BASELINE, str(ROOT), str(npy), SOURCE, TARGET, str(work / "numpy-out.npy")
        ],
        "facebridge migrate (stream)": [*migrate, str(parquet), str(work / "stream-out")],
        "facebridge migrate --engine dask": [
            *migrate, "--engine", "dask", str(parquet), str(work / "dask-out")
        ],
    }  # fmt: skip
    results = {}
    for name, command in runs.items():
        results[name] = run_measured(command)
        print(f"{name}: {results[name][0]:.1f} s, peak RSS {results[name][1]:.0f} MiB", flush=True)
    base = args.rows / results["numpy (mmap .npy, chunked matmul)"][0]
    print(f"\n{args.rows:,} templates, {SOURCE} (512-d) -> {TARGET} (128-d)\n")
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
