"""/verify latency with AS-norm on and off, one real server, requests interleaved.

`facebridge serve` with the shipped maps and calibration set and a cohort of real templates per model
(from the embedding caches: photos of the first 1,000 rows of a population, --cohort-size), measured
over loopback: a single pair per request, same space and across models, with `"normalization": "auto"`
(AS-norm against the cohort, normalised thresholds) and `"none"` (raw cosine), alternating request by
request so both see the same machine state.

With a cohort of both models, arcface vs sirius is compared through both maps when normalised, and
through the one map when not (the shipped set's raw thresholds through both maps are not used:
`bridge.serves_both_maps`), so that row measures what a user sees when cohorts are loaded: the second
map and the normalisation together. The last row measures normalisation alone on that comparison: a
second server is given the shipped set as its deployment calibration, whose raw thresholds through both
maps then judge `"none"` too, so both settings compare the pair through both maps (the thresholds'
values do not change the work a request does).

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

from facebridge.cohort.calibration_set import load_calibration_set, save_calibration_set
from facebridge.cohort.cohortfile import make_cohort, save_cohort
from facebridge.evaluation.population import load_population
from facebridge.mapping.bank import MappingBank
from facebridge.vision.manifest import load_manifest
from tests.conftest import MODELS_DIR, LiveServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "benchmark-key"
ARC, SIR = "arcface-mbf128", "sirius-mbf192"
SHIPPED_SET = ROOT / "mappings" / "calibrations" / "as-norm.calibration.json"
# name: (model a, model b, space named or None, the "comparison" both settings must answer with or None)
Rows = dict[str, tuple[str, str, str | None, str | None]]
SHIPPED_ROWS: Rows = {
    "same space (arcface)": (ARC, ARC, None, None),
    "across (arcface vs sirius)": (ARC, SIR, None, None),
    "across, one map (space sirius)": (ARC, SIR, SIR, None),
}
DEPLOYMENT_ROWS: Rows = {
    "across, both maps both ways (deployment set)": (ARC, SIR, None, "both-maps"),
}


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
        environment = {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_MAPPINGS_DIR": str(ROOT / "mappings"),
            "FACEBRIDGE_COHORT_DIR": str(cohorts),
            "FACEBRIDGE_LOAD_MODELS": "[]",
            "FACEBRIDGE_API_KEYS": KEY,
        }
        deployment = Path(tmp) / "deployment.calibration.json"
        save_calibration_set(
            deployment, load_calibration_set(SHIPPED_SET).model_copy(update={"kind": "deployment"})
        )
        rows = []
        for extra, wanted in (
            ({}, SHIPPED_ROWS),
            ({"FACEBRIDGE_CALIBRATION_FILE": str(deployment)}, DEPLOYMENT_ROWS),
        ):
            live = LiveServer({**environment, **extra}, Path(tmp) / "server.log")
            try:
                live.wait_ready()
                rows += run(live.url, population.clean, args.cohort_size, args.requests, wanted)
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
    url: str, clean: dict[str, np.ndarray], skip: int, requests: int, wanted: Rows
) -> list[tuple[str, list[float], list[float]]]:
    """Interleaved timings per comparison: (name, raw seconds, normalised seconds)."""
    rows = []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as http:
        for name, (ma, mb, space, comparison) in wanted.items():
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
            if comparison is not None:
                for mode in ("none", "auto"):
                    got = http.post("/verify", json=bodies[mode][0]).raise_for_status().json()["results"][0]
                    if got.get("comparison") != comparison:
                        raise SystemExit(
                            f"{name}, {mode}: compared as {got.get('comparison')}, not {comparison}"
                        )
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
