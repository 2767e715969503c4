"""Bulk binary /translate rate of two source trees' servers, measured by one and the same client.

The main benchmark's client imports the tree it measures (for its in-process numpy column), so comparing
two versions with it also compares two clients. Here the client stays the same and only the server's
code changes: each tree's `python -m app serve` runs in turn, alternating, on the same maps.

    python benchmarks/translate_bulk_ab.py --tree /path/to/old/checkout --tree . --mappings DIR [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402

KEY = "benchmark-key"


def serve(tree: Path, mappings: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "FACEBRIDGE_MODELS_DIR": str(tree / "models"),
        "FACEBRIDGE_MAPPINGS_DIR": str(mappings),
        "FACEBRIDGE_LOAD_MODELS": "[]",
        "FACEBRIDGE_MAX_EMBEDDINGS_PER_REQUEST": "200000",
        "FACEBRIDGE_API_KEYS": KEY,
        "FACEBRIDGE_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "facebridge", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{tree}: the server did not become ready")


def rate(port: int, body: bytes, source: str, target: str, seconds: float, rows: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port)

    def one() -> None:
        connection.request(
            "POST",
            f"/translate?source={source}&target={target}",
            body=body,
            headers={"content-type": "application/x-npy", "X-API-Key": KEY},
        )
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"/translate answered {response.status}")

    for _ in range(3):
        one()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        one()
        count += 1
    return count * rows / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", type=Path, required=True, help="a source checkout; repeat")
    parser.add_argument("--mappings", type=Path, required=True, help="the maps every server loads")
    parser.add_argument("--source", default="arcface-mbf128")
    parser.add_argument("--target", default="dlib-r29-128")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(args.rows, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    buffer = io.BytesIO()
    np.save(buffer, x)
    body = buffer.getvalue()
    print(f"| round | {' | '.join(str(t) for t in args.tree)} |")
    print("|---:|" + "---:|" * len(args.tree))
    for round_ in range(1, args.rounds + 1):
        rates = []
        for tree in args.tree:
            process, port = serve(tree.resolve(), args.mappings)
            try:
                rates.append(rate(port, body, args.source, args.target, args.seconds, args.rows))
            finally:
                process.terminate()
                process.wait()
        print(f"| {round_} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
