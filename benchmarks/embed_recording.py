"""POST /embed latency with pair recording on and off, side by side in one run.

Real `facebridge serve` processes on loopback, each loading the same two recognizers and YuNet: one with
no pair store ("no store"), two with a SQLite pair store (FACEBRIDGE_PAIRS_SQLITE_SYNC full, the default:
an fsync per recorded request; and normal) and, with --postgres where PostgreSQL binaries are installed,
one recording into a throw-away PostgreSQL server (default settings: synchronous_commit on). Each sends
the same LFW photos, one per request, as multipart with two models and `largest_only`.

On a server with a store every photo is sent twice, with and without `record_subject`, in alternating
order: the two columns then differ only by the recording (the row built, its COMMIT awaited before the
answer), on the same process, the same photos and the same minute. The no-store server shows that a
configured store costs requests that do not record nothing. Servers run one at a time (ONNX Runtime's
spinning worker threads of an idle server would slow the next one on a small machine) and take turns
for several rounds, each round a fresh process.

ONNX Runtime runs with one intra-op thread by default here (--intra-op-threads): on a 2-core machine its
spinning worker threads otherwise make the timing noise (±20 % between identical runs) larger than the
few milliseconds a COMMIT costs.

    python benchmarks/embed_recording.py [--images 60] [--rounds 3] [--postgres] [--intra-op-threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facebridge.pairs import PairStore  # noqa: E402
from tests.conftest import LFW, MODELS_DIR, LiveServer  # noqa: E402

KEY = "benchmark-key"
MODELS = ["arcface-mbf128", "sirius-mbf192"]
NO_STORE = "no store"


def start(name: str, store_env: dict[str, str], directory: Path, threads: int) -> LiveServer:
    env = {
        "FACEBRIDGE_INTRA_OP_THREADS": str(threads),
        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
        "FACEBRIDGE_PROVIDERS": "cpu",
        "FACEBRIDGE_LOAD_MODELS": json.dumps([*MODELS, "yunet"]),
        "FACEBRIDGE_API_KEYS": KEY,
        **store_env,
    }
    return LiveServer(env, directory / f"{name.replace(' ', '-')}.log")


def post(http: httpx.Client, photo: bytes, subject: str | None) -> float:
    form = {"models": ",".join(MODELS), "largest_only": "true"}
    if subject is not None:
        form["record_subject"] = subject
    began = time.perf_counter()
    answer = http.post("/embed", data=form, files={"images": ("p.jpg", photo, "image/jpeg")})
    elapsed = time.perf_counter() - began
    answer.raise_for_status()
    if subject is not None:
        assert answer.headers["Facebridge-Pairs-Recorded"] == "1", answer.headers
    return elapsed


def measure(
    targets: dict[str, dict[str, str]], photos: list[bytes], rounds: int, directory: Path, threads: int
) -> dict[tuple[str, bool], list[float]]:
    """Seconds per request by (server, recording), one server at a time, the servers taking turns."""
    times: dict[tuple[str, bool], list[float]] = {}
    for round_ in range(rounds):
        for name, env in targets.items():
            server = start(name, env, directory, threads)
            modes = [False] if name == NO_STORE else [False, True]
            try:
                server.wait_ready(120)
                with httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": KEY}) as http:
                    for photo in photos[:5]:  # warm-up: sessions, allocators, the store's connection
                        for recording in modes:
                            post(http, photo, "warm-up" if recording else None)
                    for index, photo in enumerate(photos):
                        for recording in modes if index % 2 else modes[::-1]:
                            subject = f"bench-{round_}-{index}" if recording else None
                            times.setdefault((name, recording), []).append(post(http, photo, subject))
            finally:
                server.stop()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=60, help="LFW photos (each with one detectable face)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh server processes per store")
    parser.add_argument("--postgres", action="store_true", help="also record into a throw-away PostgreSQL")
    parser.add_argument("--intra-op-threads", type=int, default=1, help="onnxruntime threads (0: all cores)")
    args = parser.parse_args()

    photos = [p.read_bytes() for p in sorted(LFW.glob("*/*_0001.jpg"))[: args.images]]
    directory = Path(tempfile.mkdtemp(prefix="facebridge-bench-pairs-"))
    cluster = None
    targets: dict[str, dict[str, str]] = {
        NO_STORE: {},
        "sqlite": {"FACEBRIDGE_PAIRS_DB": str(directory / "p.db")},
        "sqlite, sync normal": {
            "FACEBRIDGE_PAIRS_DB": str(directory / "n.db"),
            "FACEBRIDGE_PAIRS_SQLITE_SYNC": "normal",
        },
    }
    if args.postgres:
        from tests.postgres_server import PostgresCluster

        cluster = PostgresCluster()
        targets["postgresql"] = {"FACEBRIDGE_PAIRS_DSN": cluster.store_dsn()}
    try:
        times = measure(targets, photos, args.rounds, directory, args.intra_op_threads)
        stored = {}
        for name, env in targets.items():
            if name != NO_STORE:
                store = PairStore.open(env.get("FACEBRIDGE_PAIRS_DB"), dsn=env.get("FACEBRIDGE_PAIRS_DSN"))
                stored[name] = sum(s.pairs for s in store.stats())
                store.close()
    finally:
        if cluster is not None:
            cluster.stop()

    print(
        f"\nPOST /embed (multipart, 1 LFW photo, {' + '.join(MODELS)} + yunet, largest_only), "
        f"{len(photos)} photos x {args.rounds} server processes per store, CPU, "
        f"onnxruntime intra-op threads {args.intra_op_threads or 'all'}\n"
    )
    print("| server | recording | requests | median ms | p95 ms | median: on / off | p95: on / off | rows |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, recording), samples in sorted(
        times.items(), key=lambda item: (list(targets).index(item[0][0]), item[0][1])
    ):
        median = statistics.median(samples) * 1e3
        p95 = float(np.percentile(samples, 95)) * 1e3
        ratio_median = ratio_p95 = rows = "-"
        if recording:
            off = times[(name, False)]
            ratio_median = f"{statistics.median(samples) / statistics.median(off):.3f}"
            ratio_p95 = f"{np.percentile(samples, 95) / np.percentile(off, 95):.3f}"
            rows = str(stored[name])
        print(
            f"| {name} | {'on' if recording else 'off'} | {len(samples)} | {median:.2f} | {p95:.2f} "
            f"| {ratio_median} | {ratio_p95} | {rows} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
