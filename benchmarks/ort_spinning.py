"""/embed with onnxruntime's threads spinning during a run, not at all, or always, side by side.

One real `facebridge serve` per `FACEBRIDGE_ORT_SPINNING` mode, all five recognizers loaded, the same
aligned LFW crops sent to each as .npy pixels:

- batch 1: one face per request, the servers called in turn request by request (the order rotating),
  median latency per model and mode;
- batch 16: sixteen faces per request, faces per second;
- under load: two clients keep one server busy with single-face /embed requests while a third times
  /verify (one same-space pair, raw cosine) on it, so a mode that takes the cores from the event loop
  shows in the other requests' latency; each mode in turn, two rounds in alternating order.

    python -m benchmarks.ort_spinning [--modes off,during-run] [--faces 40] [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.embed_concurrency import aligned_crops
from benchmarks.embed_latency import npy_bytes
from facebridge.vision.runtime import SPINNING_MODES
from tests.conftest import MODELS_DIR, RECOGNIZERS, LiveServer

KEY = "benchmark-key"
LOADED = "arcface-mbf128"  # the model of the under-load test


def post_npy(client: httpx.Client, model: str, body: bytes) -> float:
    """Seconds one .npy /embed request took (aligned crops, BGR pixels)."""
    start = time.perf_counter()
    answer = client.post(
        f"/embed?aligned=true&models={model}&channels=bgr",
        content=body,
        headers={"content-type": "application/x-npy"},
    )
    elapsed = time.perf_counter() - start
    if answer.status_code != 200:
        raise RuntimeError(answer.text)
    return elapsed


def batch_one(
    clients: dict[str, httpx.Client], model: str, singles: list[bytes], rounds: int
) -> dict[str, float]:
    """Median ms of single-face requests, the servers called in turn, the order rotating."""
    times: dict[str, list[float]] = {mode: [] for mode in clients}
    modes = list(clients)
    for r in range(rounds):
        for i, body in enumerate(singles):
            shift = (r * len(singles) + i) % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                times[mode].append(post_npy(clients[mode], model, body))
    return {mode: statistics.median(t) * 1e3 for mode, t in times.items()}


def batch_sixteen(
    clients: dict[str, httpx.Client], model: str, batches: list[bytes], rounds: int
) -> dict[str, float]:
    """Faces per second of 16-face requests, each mode's requests one after the other per round."""
    spent = dict.fromkeys(clients, 0.0)
    modes = list(clients)
    for r in range(rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            for body in batches:
                spent[mode] += post_npy(clients[mode], model, body)
    faces = 16 * len(batches) * rounds
    return {mode: faces / seconds for mode, seconds in spent.items()}


def under_load(url: str, singles: list[bytes], pair: dict, seconds: float) -> tuple[float, float, float]:
    """(/verify p50 ms, p90 ms, /embed faces/s) with two clients sending single-face /embed requests."""
    stop = threading.Event()
    embedded = [0, 0]

    def hammer(k: int) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as http:
            i = k
            while not stop.is_set():
                post_npy(http, LOADED, singles[i % len(singles)])
                embedded[k] += 1
                i += 2

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(2)]
    latencies = []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as http:
        start = time.perf_counter()
        for t in threads:
            t.start()
        while time.perf_counter() - start < seconds:
            began = time.perf_counter()
            answer = http.post("/verify", json=pair)
            latencies.append(time.perf_counter() - began)
            if answer.status_code != 200:
                raise RuntimeError(answer.text)
            time.sleep(0.002)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return float(np.median(ms)), float(np.quantile(ms, 0.9)), sum(embedded) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", type=lambda text: text.split(","), default=["off", "during-run"])
    parser.add_argument("--models", type=lambda text: text.split(","), default=RECOGNIZERS)
    parser.add_argument("--faces", type=int, default=40, help="LFW faces per model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per mode and round, under load")
    args = parser.parse_args()
    assert all(mode in SPINNING_MODES for mode in args.modes), args.modes
    crops = {model: aligned_crops(model, args.faces)[0] for model in args.models}
    load_start = os.getloadavg()[0]
    servers: dict[str, LiveServer] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for mode in args.modes:
                servers[mode] = LiveServer(
                    {
                        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
                        "FACEBRIDGE_PROVIDERS": "cpu",
                        "FACEBRIDGE_LOAD_MODELS": "[" + ",".join(f'"{m}"' for m in args.models) + "]",
                        "FACEBRIDGE_API_KEYS": KEY,
                        "FACEBRIDGE_ORT_SPINNING": mode,
                    },
                    Path(tmp) / f"{mode}.log",
                )
            for server in servers.values():
                server.wait_ready(180)
            clients = {
                mode: httpx.Client(base_url=s.url, headers={"X-API-Key": KEY}, timeout=60)
                for mode, s in servers.items()
            }
            single_rows, batch_rows = {}, {}
            for model in args.models:
                singles = [npy_bytes(c[None]) for c in crops[model]]
                batches = [
                    npy_bytes(np.stack(crops[model][i : i + 16])) for i in range(0, len(singles) - 15, 16)
                ]
                batch_one(clients, model, singles[:4], 1)  # warm-up
                single_rows[model] = batch_one(clients, model, singles, args.rounds)
                batch_rows[model] = batch_sixteen(clients, model, batches, args.rounds)
            embedding = np.linspace(-1, 1, 128, dtype=np.float32)
            side = {"model": LOADED, "embedding": (embedding / np.linalg.norm(embedding)).tolist()}
            pair = {"pair": {"a": side, "b": side}}
            loaded: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in args.modes}
            singles = [npy_bytes(c[None]) for c in crops.get(LOADED, next(iter(crops.values())))]
            for r in range(2):
                for mode in args.modes if r % 2 == 0 else args.modes[::-1]:
                    loaded[mode].append(under_load(servers[mode].url, singles, pair, args.seconds))
            for client in clients.values():
                client.close()
        finally:
            for server in servers.values():
                server.stop()
    load_end = os.getloadavg()[0]
    base = args.modes[0]
    print(
        f"\n/embed of aligned LFW crops as .npy pixels, {args.faces} faces x {args.rounds} rounds per model, "
        f"{os.cpu_count()} CPUs, load average {load_start:.2f} at the start, {load_end:.2f} at the end\n"
    )
    header = " | ".join(f"{mode}" for mode in args.modes)
    ratio = f"{args.modes[-1]} vs {base}"
    print(f"| model | batch 1 p50 ms: {header} | {ratio} | batch 16 faces/s: {header} | {ratio} |")
    print("|---|" + "---:|" * (2 * len(args.modes) + 2))
    for model in args.models:
        one, sixteen = single_rows[model], batch_rows[model]
        last = args.modes[-1]
        cells = [f"{one[m]:.2f}" for m in args.modes] + [f"{one[last] / one[base]:.2f}x"]
        cells += [f"{sixteen[m]:.0f}" for m in args.modes] + [f"{sixteen[last] / sixteen[base]:.2f}x"]
        print(f"| {model} | " + " | ".join(cells) + " |")
    print(f"\nUnder load: two clients sending single-face {LOADED} /embed requests, a third timing /verify\n")
    print("| mode | round | /verify p50 ms | /verify p90 ms | /embed faces/s |")
    print("|---|---:|---:|---:|---:|")
    for mode in args.modes:
        for r, (p50, p90, rate) in enumerate(loaded[mode], 1):
            print(f"| {mode} | {r} | {p50:.2f} | {p90:.2f} | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
