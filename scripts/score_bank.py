"""Score a bank folder's maps on a labelled population, e.g. people the bank was never fitted on.

Every direct map between the given models: cross accuracy and TAR@FAR 1e-3/1e-4 (mapped source template
against native target probe, every genuine pair and 2M impostor pairs, both orders) next to the weaker
native model, and the FAR the map's own far_1e-3 threshold reaches there, with its 95% interval.

    python scripts/score_bank.py --bank mappings --population celeba-dev [--model A --model B ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facebridge.evaluation.population import load_population
from facebridge.evaluation.population_report import far_check_text, score_bank

ROOT = Path(__file__).resolve().parents[1]

MODELS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128", "hse-mobilenet1024"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bank", type=Path, default=ROOT / "mappings")
    parser.add_argument("--population", default="celeba-dev", help="cache name (facebridge embed-dataset)")
    parser.add_argument("--model", action="append")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    args = parser.parse_args()
    models = args.model or MODELS
    population = load_population(args.cache_dir, args.population, models)
    print(
        "| map | method | weaker native acc / TAR@1e-3 (%) | cross acc (%) | cross TAR@1e-3 (%) "
        "| cross TAR@1e-4 (%) | FAR at its far_1e-3 threshold [95% CI] |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for score in score_bank(args.bank, population, models):
        weaker = min(score.native_source, score.native_target, key=lambda m: m.accuracy)
        weaker_tar = min(score.native_source.tar_far_1e3, score.native_target.tar_far_1e3)
        print(
            f"| {score.map_id} | {score.method} | {weaker.accuracy * 100:.2f} / {weaker_tar * 100:.1f} "
            f"| {score.cross.accuracy * 100:.2f} | {score.cross.tar_far_1e3 * 100:.1f} "
            f"| {score.cross.tar_far_1e4 * 100:.1f} | {far_check_text(score.cross)} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
