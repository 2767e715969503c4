"""Fit the shipped mapping bank: a map for every ordered pair of recognizers, and same-space calibrations.

Fits on every labelled population given (their people pooled; e.g. all of LFW and the CelebA
development set), with the augmented variants named by --augment, from the embedding caches that
`facebridge embed-dataset` writes (cache/NAME-MODEL.npz, cache/NAME~KIND-MODEL.npz). Per pair, the
method is chosen on a validation fifth of the identities, quality and thresholds are cross-fitted on
the rest, and the shipped map is fitted on everyone (app/mapping/bank_fit.py says why).

    python scripts/fit_bank.py --population lfw --population celeba-dev \\
        --augment lfw:flip --augment lfw:jitter --method ridge --method residual-mlp \\
        --far-factors docs/interchangeability/population-far-factors.json [--pair A:B] [--out mappings]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app import __version__  # noqa: E402
from app.dataset_embedding import dataset_cache_path  # noqa: E402
from app.embedding_cache import EmbeddingCache  # noqa: E402
from app.evaluation.population import load_population  # noqa: E402
from app.mapping.bank_fit import BankRecipe, fit_bank_map, merge, space_calibration  # noqa: E402
from app.mapping.mapfile import (  # noqa: E402
    SPACE_SUFFIX,
    SpaceCalibration,
    SpaceRef,
    map_filename,
    save_map,
    save_space,
)

MODELS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128", "hse-mobilenet1024"]


def space_ref(cache_dir: Path, dataset: str, model: str) -> SpaceRef:
    meta = EmbeddingCache.load(dataset_cache_path(cache_dir, dataset, model)).meta
    return SpaceRef(model=model, dim=int(str(meta["dim"])), sha256=str(meta["model_sha256"]))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--population", action="append", required=True, help="cache name; repeat")
    parser.add_argument("--augment", action="append", default=[], metavar="POPULATION:KIND")
    parser.add_argument("--method", action="append", help="repeat to choose per pair (default ridge)")
    parser.add_argument("--model", action="append", help="default: the five development recognizers")
    parser.add_argument("--pair", action="append", metavar="A:B", help="only these maps (default: all)")
    parser.add_argument(
        "--far-factors", type=Path, help="JSON {operating point: factor} of the population study"
    )
    parser.add_argument("--no-spaces", action="store_true", help="keep the space calibrations as they are")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    parser.add_argument("--out", type=Path, default=ROOT / "mappings")
    args = parser.parse_args()
    models = args.model or MODELS
    kinds: dict[str, list[str]] = {}
    for spec in args.augment:
        name, kind = spec.split(":", 1)
        kinds.setdefault(name, []).append(kind)
    population = merge(
        [load_population(args.cache_dir, name, models, kinds.get(name, [])) for name in args.population]
    )
    factors: dict[str, float] = {}
    note = ""
    if args.far_factors is not None:
        factors = json.loads(args.far_factors.read_text())
        note = (
            "Clopper-Pearson 95% interval widened by the largest factor between nominal and reached FAR "
            f"seen across populations ({args.far_factors.as_posix()})"
        )
    all_kinds = tuple(sorted({k for ks in kinds.values() for k in ks}))
    recipe = BankRecipe(
        methods=tuple(args.method or ["ridge"]), augmentations=all_kinds, far_factors=factors, far_note=note
    )
    refs = {m: space_ref(args.cache_dir, args.population[0], m) for m in models}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (args.out / "spaces").mkdir(parents=True, exist_ok=True)
    if not args.no_spaces:
        for model in models:
            calibration = space_calibration(population, model, recipe)
            space = SpaceCalibration(
                space=refs[model],
                dataset=population.name,
                images=len(population),
                identities=calibration.identities or 0,
                calibration=calibration,
                created=created,
                code_version=__version__,
            )
            save_space(args.out / "spaces" / f"{model}{SPACE_SUFFIX}", space)
            threshold = calibration.thresholds["far_1e-3"]
            print(
                f"space {model}: far_1e-3 threshold {threshold.threshold:.4f} far_range {threshold.far_range}"
            )
    pairs = [tuple(p.split(":", 1)) for p in args.pair] if args.pair else itertools.permutations(models, 2)
    print("| map | method | mean cosine | R2 | source native | target native | mapped | cross | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for source, target in pairs:
        start = time.perf_counter()
        fitted = fit_bank_map(population, refs[source], refs[target], recipe)
        meta = save_map(
            args.out / map_filename(source, target), fitted.meta, fitted.weight, fitted.bias, fitted.residual
        )
        q = meta.quality
        print(
            f"| {meta.id} | {meta.method} | {q.mean_cosine:.4f} | {q.r2:.4f} "
            f"| {q.accuracy_source_native:.4f} | {q.accuracy_target_native:.4f} "
            f"| {q.accuracy_mapped:.4f} | {q.accuracy_cross:.4f} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
