"""/translate and /verify speed over loopback, next to a bare FastAPI echo endpoint and in-process numpy.

All in one run, against real uvicorn servers: `facebridge serve` with the maps in `mappings/` (or
--mappings DIR) and an echo app (benchmarks/echo_app.py) that parses and returns the same JSON payload.

    python benchmarks/translate_throughput.py [--source arcface-mbf128] [--target faceplugin-mbf512]
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.api.translate import read_npy  # noqa: E402
from app.mapping.bank import MapPath, MappingBank  # noqa: E402
from tests.conftest import MODELS_DIR, LiveServer, free_port  # noqa: E402

BENCH_KEY = "benchmark-key"


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    for _ in range(max(3, repeats // 20)):
        call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bulk_row(
    api: httpx.Client, echo_client: httpx.Client, path: MapPath, source: str, target: str, n: int, dim_in: int
) -> str:
    """One table row: embeddings/s for JSON, echo, binary and in-process numpy at batch size n."""
    batch = unit_rows(n, dim_in, 2)
    repeats = max(3, 30_000 // n)
    json_body = {"source": source, "target": target, "embeddings": batch.tolist()}
    json_rate = echo_rate = float("nan")
    if n <= 10_000:  # JSON bodies of 100k x 128 floats are not what JSON is for; use the binary form
        json_rate = n / statistics.mean(
            timed(lambda: api.post("/translate", json=json_body).raise_for_status(), repeats)
        )
        echo_rate = n / statistics.mean(
            timed(lambda: echo_client.post("/echo", json=json_body).raise_for_status(), repeats)
        )
    body = npy(batch)
    url = f"/translate?source={source}&target={target}"
    # the standard library client reads a large body in one go; parsing is the same zero-copy reader
    connection = http.client.HTTPConnection(api.base_url.host, api.base_url.port)

    def binary() -> None:
        connection.request(
            "POST", url, body=body, headers={"content-type": "application/x-npy", "X-API-Key": BENCH_KEY}
        )
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"/translate answered {response.status}: {data[:200]!r}")
        read_npy(data)

    binary_rate = n / statistics.mean(timed(binary, repeats))
    numpy_rate = n / statistics.mean(timed(lambda: path.apply(batch), max(20, repeats)))
    return (
        f"| {n:,} | {json_rate:,.0f} | {echo_rate:,.0f} | {binary_rate:,.0f} | {numpy_rate:,.0f} "
        f"| {binary_rate / numpy_rate:.2f}x |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="arcface-mbf128")
    parser.add_argument(
        "--target",
        default="dlib-r29-128",
        help="default: same dim as the source, so the echo endpoint returns as many bytes as /translate",
    )
    parser.add_argument("--mappings", type=Path, default=ROOT / "mappings")
    parser.add_argument("--requests", type=int, default=400, help="single requests per measurement")
    args = parser.parse_args()

    bank = MappingBank.load(args.mappings)
    path = bank.find_path(args.source, args.target)
    if path is None:
        raise SystemExit(f"no map {args.source}->{args.target} in {args.mappings}")
    dim_in = path.maps[0].meta.source.dim
    dim_out = path.maps[-1].meta.target.dim
    env = {
        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
        "FACEBRIDGE_MAPPINGS_DIR": str(args.mappings),
        "FACEBRIDGE_LOAD_MODELS": "[]",
        "FACEBRIDGE_MAX_EMBEDDINGS_PER_REQUEST": "200000",
        "FACEBRIDGE_API_KEYS": BENCH_KEY,
    }
    server = LiveServer(env, Path("/tmp/facebridge-translate-bench.log"))
    echo_port = free_port()
    echo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.echo_app:app",
            "--port",
            str(echo_port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server.wait_ready()
        api = httpx.Client(base_url=server.url, timeout=300, headers={"X-API-Key": BENCH_KEY})
        echo_client = httpx.Client(base_url=f"http://127.0.0.1:{echo_port}", timeout=300)
        for _ in range(100):
            try:
                echo_client.get("/docs")
                break
            except httpx.TransportError:
                time.sleep(0.1)

        one = unit_rows(1, dim_in)
        translate_body = {"source": args.source, "target": args.target, "embeddings": one.tolist()}
        other = unit_rows(1, dim_out, 1)
        verify_body = {
            "pair": {
                "a": {"model": args.source, "embedding": one[0].tolist()},
                "b": {"model": args.target, "embedding": other[0].tolist()},
            }
        }
        singles = {
            "/translate (1 embedding)": lambda: api.post(
                "/translate", json=translate_body
            ).raise_for_status(),
            "echo of the /translate body": lambda: echo_client.post(
                "/echo", json=translate_body
            ).raise_for_status(),
            "/verify (1 pair)": lambda: api.post("/verify", json=verify_body).raise_for_status(),
            "echo of the /verify body": lambda: echo_client.post(
                "/echo", json=verify_body
            ).raise_for_status(),
        }
        single_rates = {}
        print(f"\nSingle requests, sequential, {args.requests} each ({args.source} -> {args.target})\n")
        print("| endpoint | requests/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|")
        for name, call in singles.items():
            times = timed(call, args.requests)
            single_rates[name] = 1.0 / statistics.mean(times)
            print(
                f"| {name} | {single_rates[name]:.0f} | {np.percentile(times, 50) * 1e3:.2f} "
                f"| {np.percentile(times, 99) * 1e3:.2f} |"
            )
        translate_ratio = (
            single_rates["/translate (1 embedding)"] / single_rates["echo of the /translate body"]
        )
        verify_ratio = single_rates["/verify (1 pair)"] / single_rates["echo of the /verify body"]
        print(f"\nratio /translate / echo: {translate_ratio:.2f}x; /verify / echo: {verify_ratio:.2f}x")

        print("\nBulk translation (embeddings/s)\n")
        print(
            "| batch | JSON /translate | echo of that JSON | binary .npy /translate | in-process numpy "
            "| binary / numpy |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for n in (1_000, 10_000, 100_000):
            print(bulk_row(api, echo_client, path, args.source, args.target, n, dim_in))
    finally:
        server.stop()
        echo.terminate()
        echo.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
