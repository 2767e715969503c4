"""/verify latency with AS-norm on and off, one real server, requests interleaved.

`facebridge serve` with the shipped maps and calibration set and a cohort of real templates per model
(from the embedding caches: photos of the first 1,000 rows of a population, --cohort-size), measured
over loopback: a single pair per request, same space and across models, with `"normalization": "auto"`
(AS-norm against the cohort, normalised thresholds) and `"none"` (raw cosine), alternating request by
request so both see the same machine state.

    python -m benchmarks.verify_normalization [--population rmfd-dev] [--requests 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from facebridge.cohort.cohortfile import make_cohort, save_cohort
from facebridge.evaluation.population import load_population
from facebridge.mapping.bank import MappingBank
from facebridge.vision.manifest import load_manifest
from tests.conftest import MODELS_DIR, LiveServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "benchmark-key"
ARC, SIR = "arcface-mbf128", "sirius-mbf192"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--population", default="lfw", help="embedding caches the cohort and probes come from"
    )
    parser.add_argument("--cohort-size", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000, help="per setting and comparison")
    args = parser.parse_args()
    bank = MappingBank.load(ROOT / "mappings", load_manifest(MODELS_DIR / "manifest.toml"))
    population = load_population(ROOT / "cache", args.population, [ARC, SIR])
    with tempfile.TemporaryDirectory() as tmp:
        cohorts = Path(tmp) / "cohorts"
        for model in (ARC, SIR):
            templates = population.clean[model][: args.cohort_size]
            save_cohort(
                cohorts / model, make_cohort(templates, bank.spaces[model], "npy", f"{args.population} cache")
            )
        live = LiveServer(
            {
                "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
                "FACEBRIDGE_MAPPINGS_DIR": str(ROOT / "mappings"),
                "FACEBRIDGE_COHORT_DIR": str(cohorts),
                "FACEBRIDGE_LOAD_MODELS": "[]",
                "FACEBRIDGE_API_KEYS": KEY,
            },
            Path(tmp) / "server.log",
        )
        try:
            live.wait_ready()
            rows = run(live.url, population.clean, args.cohort_size, args.requests)
        finally:
            live.stop()
    print(
        f"/verify, one pair per request, cohort of {args.cohort_size} per model, "
        f"{args.requests} requests each"
    )
    print(
        "| comparison | raw cosine: median (ms) | p90 | AS-norm: median (ms) | p90 | AS-norm / raw (median) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, raw, norm in rows:
        print(
            f"| {name} | {statistics.median(raw) * 1e3:.3f} | {np.percentile(raw, 90) * 1e3:.3f} | "
            f"{statistics.median(norm) * 1e3:.3f} | {np.percentile(norm, 90) * 1e3:.3f} | "
            f"{statistics.median(norm) / statistics.median(raw):.2f}x |"
        )
    return 0


def run(
    url: str, clean: dict[str, np.ndarray], skip: int, requests: int
) -> list[tuple[str, list[float], list[float]]]:
    """Interleaved timings per comparison: (name, raw seconds, normalised seconds)."""
    rows = []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as http:
        # with a cohort of both models, arcface vs sirius is compared through both maps when normalised
        # and through one map when not; naming the space keeps one map both ways
        for name, (ma, mb, space) in {
            "same space (arcface)": (ARC, ARC, None),
            "across (arcface vs sirius)": (ARC, SIR, None),
            "across, one map (space sirius)": (ARC, SIR, SIR),
        }.items():
            a, b = clean[ma][skip : skip + 64], clean[mb][skip + 64 : skip + 128]
            bodies = {
                mode: [
                    {
                        "pair": {
                            "a": {"model": ma, "embedding": a[i % 64].tolist()},
                            "b": {"model": mb, "embedding": b[i % 64].tolist()},
                        },
                        "normalization": mode,
                        **({"space": space} if space else {}),
                    }
                    for i in range(64)
                ]
                for mode in ("none", "auto")
            }
            answer = http.post("/verify", json=bodies["auto"][0]).raise_for_status().json()["results"][0]
            if answer["calibration"]["units"] != "as-norm":
                raise SystemExit(f"the server does not normalise {name}: {answer['calibration']['note']}")
            timings: dict[str, list[float]] = {"none": [], "auto": []}
            for i in range(requests + 50):
                for mode in ("none", "auto") if i % 2 else ("auto", "none"):
                    start = time.perf_counter()
                    http.post("/verify", json=bodies[mode][i % 64]).raise_for_status()
                    if i >= 50:  # warm-up
                        timings[mode].append(time.perf_counter() - start)
            rows.append((name, timings["none"], timings["auto"]))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
