"""What scoped keys and per-key limits cost a request: /verify and /translate single-request latency on
a server with scoped keys (a keys file of hashed entries, each with a rate and an in-flight limit)
against one with a plain key (FACEBRIDGE_API_KEYS), side by side in one run.

Both are real `facebridge serve` processes on loopback with the shipped maps (no model file is needed:
the requests carry templates). Requests go one at a time over a kept-alive connection to each server,
alternating between the two servers request by request (which goes first flips every pair), so that
the load of a shared machine hits both alike; the ratio column is the median of the per-pair ratios.
The scoped key's limits are set high enough never to refuse, so the limiter's work is measured, not
its refusals. A second table times the per-request key work alone, in-process (RequestGuard's part:
look the key up, take a token and an in-flight slot, give the slot back, count the request), which a
busy machine's scheduling noise does not blur as much: the minimum over alternating runs.

    python benchmarks/auth_overhead.py [--pairs 3000] [--cpu 1]

On a machine busy with other work, `--cpu N` pins this process and both servers to one CPU, so that
they compete for it on equal terms (unpinned, the scheduler can favour one server for seconds at a
time and the ratios then measure that, not the code).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facebridge.keyfile import KeyLimits, create_key  # noqa: E402
from facebridge.service.security import ApiKeys  # noqa: E402
from tests.conftest import MODELS_DIR, LiveServer  # noqa: E402

PLAIN_KEY = "benchmark-plain-key-0123456789abcdef"
SOURCE, TARGET = "arcface-mbf128", "sirius-mbf192"
DIMS = {SOURCE: 128, TARGET: 192}


def unit(dim: int, seed: int) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32).tolist()


BODIES = {
    "/verify": json.dumps(
        {
            "pair": {
                "a": {"model": SOURCE, "embedding": unit(DIMS[SOURCE], 1)},
                "b": {"model": TARGET, "embedding": unit(DIMS[TARGET], 2)},
            }
        }
    ).encode(),
    "/translate": json.dumps(
        {"source": SOURCE, "target": TARGET, "embeddings": [unit(DIMS[SOURCE], 3)]}
    ).encode(),
}


@dataclass
class Served:
    name: str
    live: LiveServer
    key: str
    connection: http.client.HTTPConnection | None = None

    def post(self, route: str) -> float:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.live.port, timeout=30)
        headers = {"content-type": "application/json", "x-api-key": self.key}
        start = time.perf_counter()
        self.connection.request("POST", route, BODIES[route], headers)
        response = self.connection.getresponse()
        response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"{self.name} {route}: {response.status}")
        return elapsed


def serve(directory: Path, name: str, env: dict[str, str]) -> LiveServer:
    live = LiveServer(
        {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_LOAD_MODELS": "[]",
            "FACEBRIDGE_PROVIDERS": "cpu",
            "FACEBRIDGE_AUDIT_LOG": str(directory / f"{name}-audit.log"),
            **env,
        },
        directory / f"{name}.log",
    )
    live.wait_ready()
    return live


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def key_work(keys: ApiKeys, key: str, count: int) -> float:
    """Seconds per request of what RequestGuard does with a key (the scope check is the same code for
    both configurations and is left out)."""
    await keys.authenticate(key)  # the one scrypt check of a scoped key
    start = time.perf_counter()
    for _ in range(count):
        auth = await keys.authenticate(key)
        assert auth.principal is not None
        limiter = auth.principal.limiter
        if limiter.limited:
            assert limiter.admit() is None
            limiter.release()
        limiter.count("served")
    return (time.perf_counter() - start) / count


def key_work_table(keys_file: Path, scoped_key: str, count: int = 100_000, runs: int = 7) -> None:
    logging.getLogger("facebridge").setLevel(logging.ERROR)  # the plain key's start-up advice, not here
    plain = ApiKeys(PLAIN_KEY, None, False)
    scoped = ApiKeys(None, keys_file, False)
    best = {"plain key": float("inf"), "scoped + limits": float("inf")}
    for _ in range(runs):
        best["plain key"] = min(best["plain key"], asyncio.run(key_work(plain, PLAIN_KEY, count)))
        best["scoped + limits"] = min(
            best["scoped + limits"], asyncio.run(key_work(scoped, scoped_key, count))
        )
    print(f"\nper-request key work in-process (minimum of {runs} alternating runs of {count:,} requests)\n")
    print("| configuration | µs per request |")
    print("|---|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds * 1e6:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3000, help="requests per server and route")
    parser.add_argument("--keys", type=int, default=20, help="entries in the scoped keys file")
    parser.add_argument("--cpu", type=int, help="run client and servers on this CPU only (Linux)")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # the servers inherit it

    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        keys_file = directory / "keys.json"
        limits = KeyLimits(rate_per_s=1_000_000, burst=1_000_000, max_concurrent=64)
        for i in range(args.keys - 1):  # other clients' entries, as a real file has
            create_key(keys_file, f"client-{i}", ["embed"], limits=limits)
        _, scoped_key = create_key(keys_file, "bench", ["translate", "verify"], limits=limits)
        servers = [
            Served("plain key", serve(directory, "plain", {"FACEBRIDGE_API_KEYS": PLAIN_KEY}), PLAIN_KEY),
            Served(
                "scoped + limits",
                serve(directory, "scoped", {"FACEBRIDGE_API_KEYS_FILE": str(keys_file)}),
                scoped_key,
            ),
        ]
        try:
            times: dict[tuple[str, str], list[float]] = {(s.name, r): [] for s in servers for r in BODIES}
            for served in servers:  # warm-up (the scoped key's one scrypt check happens here)
                for route in BODIES:
                    for _ in range(50):
                        served.post(route)
            for route in BODIES:
                for i in range(args.pairs):
                    for served in servers if i % 2 == 0 else servers[::-1]:
                        times[(served.name, route)].append(served.post(route))
        finally:
            for served in servers:
                if served.connection is not None:
                    served.connection.close()
                served.live.stop()
        print_latencies(times, args.pairs, args.keys)
        key_work_table(keys_file, scoped_key)
    return 0


def print_latencies(times: dict[tuple[str, str], list[float]], pairs: int, keys: int) -> None:

    print(
        f"single-request latency, {pairs} requests per server and route, alternating request by "
        f"request; scoped: {keys} keys in the file, each with a rate and an in-flight limit\n"
    )
    print(
        "| route | plain key p50 ms | scoped + limits p50 ms | ratio of p50s | median of paired ratios "
        "| plain p90 ms | scoped p90 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for route in BODIES:
        plain, scoped = times[("plain key", route)], times[("scoped + limits", route)]
        paired = statistics.median(s / p for p, s in zip(plain, scoped, strict=True))
        p50 = (statistics.median(plain) * 1000, statistics.median(scoped) * 1000)
        print(
            f"| {route} | {p50[0]:.3f} | {p50[1]:.3f} | {p50[1] / p50[0]:.3f}x | {paired:.3f}x "
            f"| {percentile(plain, 90) * 1000:.3f} | {percentile(scoped, 90) * 1000:.3f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
