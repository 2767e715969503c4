"""Fit the shipped mapping bank: a map for every ordered pair of recognizers, and same-space calibrations.

Needs an embedding cache per model over the same photos (`facebridge embed` or `facebridge
evaluate-native` writes them to cache/lfw-MODEL.npz). Every map holds out a quarter of the identities
for its recorded quality and calibration.

    python scripts/fit_bank.py [--method ridge --method softmax] [--cache-dir cache] [--out mappings]

With several methods, each pair gets every method's fit and keeps the one with the best cross accuracy
on the held-out identities (recorded in the map's provenance as the candidates it was chosen from).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.embedding_cache import EmbeddingCache  # noqa: E402
from app.mapping.fitting import fit_map, pair_caches  # noqa: E402
from app.mapping.mapfile import SPACE_SUFFIX, map_filename, save_map, save_space  # noqa: E402
from app.mapping.spaces import calibrate_space  # noqa: E402

MODELS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128", "hse-mobilenet1024"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", action="append", help="repeat to choose per pair (default ridge)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    parser.add_argument("--dataset", default="lfw")
    parser.add_argument("--out", type=Path, default=ROOT / "mappings")
    args = parser.parse_args()
    methods = args.method or ["ridge"]
    caches = {m: EmbeddingCache.load(args.cache_dir / f"{args.dataset}-{m}.npz") for m in MODELS}
    (args.out / "spaces").mkdir(parents=True, exist_ok=True)
    for model_id, cache in caches.items():
        space = calibrate_space(cache, args.dataset)
        save_space(args.out / "spaces" / f"{model_id}{SPACE_SUFFIX}", space)
        print(
            f"space {model_id}: far_1e-3 threshold {space.calibration.thresholds['far_1e-3'].threshold:.4f}"
        )
    print("| map | method | mean cosine | R2 | source native | target native | mapped | cross |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for source, target in itertools.permutations(MODELS, 2):
        paired = pair_caches(caches[source], caches[target], args.dataset)
        candidates = [fit_map(paired, method) for method in methods]
        fitted = max(candidates, key=lambda c: c.meta.quality.accuracy_cross or 0.0)
        if len(candidates) > 1:
            scores = ", ".join(f"{c.meta.method} {c.meta.quality.accuracy_cross:.4f}" for c in candidates)
            fitted.meta.provenance.selection = f"best held-out cross accuracy of: {scores}"
        meta = save_map(args.out / map_filename(source, target), fitted.meta, fitted.weight, fitted.bias)
        q = meta.quality
        print(
            f"| {meta.id} | {meta.method} | {q.mean_cosine:.4f} | {q.r2:.4f} "
            f"| {q.accuracy_source_native:.4f} | {q.accuracy_target_native:.4f} "
            f"| {q.accuracy_mapped:.4f} | {q.accuracy_cross:.4f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
