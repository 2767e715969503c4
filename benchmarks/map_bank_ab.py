"""Bulk binary /translate rate of two map banks, direction by direction, served side by side.

A refitted bank must not make /translate slower (the goal: at least 0.8x of the bank it replaces). Two
servers of this tree run at once, one on each bank; for every direction both get the same .npy batch,
request by request in turn, so load on the machine falls on both alike.

    git archive <old commit> mappings | tar -x -C /tmp/old-bank
    python benchmarks/map_bank_ab.py --bank /tmp/old-bank/mappings --bank mappings [--rows 10000]
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.translate_bulk_ab import KEY, serve  # noqa: E402
from facebridge.mapping.bank import MappingBank  # noqa: E402

MODELS = ("arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128")


def timed_request(connection: http.client.HTTPConnection, body: bytes, source: str, target: str) -> float:
    start = time.perf_counter()
    connection.request(
        "POST",
        f"/translate?source={source}&target={target}",
        body=body,
        headers={"content-type": "application/x-npy", "X-API-Key": KEY},
    )
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"/translate {source}->{target} answered {response.status}")
    return time.perf_counter() - start


def describe(bank: MappingBank, source: str, target: str) -> str:
    loaded = bank.maps[(source, target)]
    hidden = loaded.residual.hidden if loaded.residual is not None else None
    return f"{loaded.meta.method}" + (f" h={hidden}" if hidden else "")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bank", action="append", type=Path, required=True, help="old bank, then new")
    parser.add_argument("--model", action="append", help=f"default: {', '.join(MODELS)}")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=15, help="timed requests per bank and direction")
    args = parser.parse_args()
    if len(args.bank) != 2:
        parser.error("give exactly two --bank folders: the old one, then the new one")
    models = args.model or list(MODELS)
    banks = [MappingBank.load(path) for path in args.bank]
    servers = [serve(ROOT, path.resolve()) for path in args.bank]  # this tree on each bank
    try:
        connections = [http.client.HTTPConnection("127.0.0.1", port) for _, port in servers]
        print(
            f"{args.rows:,} rows per request, {args.requests} timed requests per bank and direction, "
            "the two servers called in turn"
        )
        print()
        print(
            "| direction | old map | new map | old file kB | new file kB | old rows/s | new rows/s |"
            " new / old |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|")
        ratios = []
        for source, target in itertools.permutations(models, 2):
            dim = banks[0].maps[(source, target)].meta.source.dim
            x = np.random.default_rng(0).normal(size=(args.rows, dim)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            buffer = io.BytesIO()
            np.save(buffer, x)
            body = buffer.getvalue()
            times: list[list[float]] = [[], []]
            for index in range(args.requests + 2):
                for side in (0, 1) if index % 2 == 0 else (1, 0):
                    elapsed = timed_request(connections[side], body, source, target)
                    if index >= 2:  # two warm-up requests each
                        times[side].append(elapsed)
            rates = [args.rows / statistics.median(t) for t in times]
            sizes = [(path / f"{source}__{target}.safetensors").stat().st_size / 1000 for path in args.bank]
            ratios.append(rates[1] / rates[0])
            print(
                f"| {source}->{target} | {describe(banks[0], source, target)} | "
                f"{describe(banks[1], source, target)} | {sizes[0]:,.0f} | {sizes[1]:,.0f} | "
                f"{rates[0]:,.0f} | {rates[1]:,.0f} | {rates[1] / rates[0]:.2f}x |",
                flush=True,
            )
        print()
        print(f"new / old: median {statistics.median(ratios):.2f}x, lowest {min(ratios):.2f}x")
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
