"""Load over loopback at the service's measured capacity: errors, p99 latency and RSS at start and end.

Starts `facebridge serve` (shipped maps, no ONNX models needed for /translate and /verify), finds the
capacity by running wrk with 1, 2, 4 and 8 connections for a short while each (the connection count
past which throughput stops growing), then holds that load for --minutes and samples the server's
RSS every 10 s. Needs `wrk` (apt install wrk).

    python benchmarks/load_test.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import MODELS_DIR, LiveServer  # noqa: E402

KEY = "load-test-key"
SCRIPT = ROOT / "benchmarks" / "wrk" / "mixed.lua"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wrk(url: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(SCRIPT), url],
        capture_output=True, text=True, env={**os.environ, "FACEBRIDGE_KEY": KEY}, check=True,
    ).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--probe-seconds", type=int, default=15)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt install wrk)")
    env = {
        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
        "FACEBRIDGE_LOAD_MODELS": "[]",
        "FACEBRIDGE_API_KEYS": KEY,
        "FACEBRIDGE_LOG_LEVEL": "warning",
    }
    server = LiveServer(env, Path("/tmp/facebridge-load-test.log"))
    try:
        server.wait_ready()
        wrk(server.url, 2, 3)  # warm-up
        print("| connections | requests/s | p50 ms | p99 ms | errors |")
        print("|---:|---:|---:|---:|---:|")
        best_c, best_rps = 1, 0.0
        for c in (1, 2, 4, 8):
            r = wrk(server.url, c, args.probe_seconds)
            errors = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
            print(
                f"| {c} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {errors:.0f} |", flush=True
            )
            if r["rps"] > best_rps * 1.05:
                best_c, best_rps = c, r["rps"]
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            start = time.monotonic()
            while not stop.is_set():
                samples.append((time.monotonic() - start, rss_mib(server.process.pid)))
                stop.wait(10)

        sampler = threading.Thread(target=sample)
        rss_start = rss_mib(server.process.pid)
        sampler.start()
        r = wrk(server.url, best_c, int(args.minutes * 60))
        stop.set()
        sampler.join()
        rss_end = rss_mib(server.process.pid)
        errors = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
        print(
            f"\nSustained load: {args.minutes:g} min, {best_c} connections (capacity {best_rps:.0f} req/s)\n"
        )
        print(
            "| requests | requests/s | p50 ms | p99 ms | errors | RSS start MiB | RSS end MiB | RSS max MiB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {r['requests']:.0f} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {errors:.0f} "
            f"| {rss_start:.1f} | {rss_end:.1f} | {max(s[1] for s in samples):.1f} |"
        )
        return 0 if errors == 0 else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
