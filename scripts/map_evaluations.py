"""Write the evaluation sidecar of every map in a bank: mappings/evaluations/SOURCE__TARGET.evaluation.json.

For each labelled population with embedding caches (cache/{population}-{model}.npz, made by `facebridge
embed-dataset`), every genuine pair and a seeded sample of impostor pairs are scored natively in the
target model's space and across (the source template translated by the map, against the target
model's own template, both orders). Histograms and DET curves of those scores are what
GET /mappings/{source}/{target}/evaluation serves and the operator console draws. A population is
used only where the caches of both models of a map exist and cover the population's photos
(`--allow-partial` takes a cache that is still being built as it is).

    python scripts/map_evaluations.py [--bank mappings] [--population lfw ...] [--impostors 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from facebridge.config import Settings
from facebridge.dataset_embedding import dataset_cache_path
from facebridge.embedding_cache import EmbeddingCache, list_images
from facebridge.evaluation.evaluation_files import evaluation_path, save_evaluation
from facebridge.evaluation.map_evaluation import evaluate_map
from facebridge.evaluation.population import (
    DEVELOPMENT_POPULATIONS,
    PairSample,
    Population,
    load_population,
    verification_pairs,
)
from facebridge.mapping.bank import MappingBank
from facebridge.schemas.evaluation import ScoreSet

ROOT = Path(__file__).resolve().parents[1]

DATASETS = ROOT.parent / "shared" / "datasets"


def usable_models(cache_dir: Path, population: str, models: list[str], allow_partial: bool) -> list[str]:
    """The models whose cache of `population` exists and (unless allow_partial) covers its photos."""
    folder = DATASETS / population
    expected = len(list_images(folder)) if folder.is_dir() else None
    usable = []
    for model in models:
        path = dataset_cache_path(cache_dir, population, model)
        if not path.is_file():
            continue
        rows = len(EmbeddingCache.load(path))
        if expected is not None and rows < expected and not allow_partial:
            print(
                f"  {population}/{model}: cache holds {rows} of {expected} photos (still building?): skipped"
            )
            continue
        usable.append(model)
    return usable


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bank", type=Path, default=ROOT / "mappings", help="the maps to evaluate")
    parser.add_argument("--out", type=Path, help="mappings folder to write into (default: --bank)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    parser.add_argument(
        "--population", action="append", help=f"default: {', '.join(DEVELOPMENT_POPULATIONS)}"
    )
    parser.add_argument("--impostors", type=int, default=1_000_000, help="impostor pairs per population")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow-partial", action="store_true", help="use caches still being built")
    parser.add_argument("--map", action="append", help="only these maps (SOURCE->TARGET)")
    args = parser.parse_args()

    bank = MappingBank.load(args.bank, Settings().load_manifest())
    maps = {key: m for key, m in sorted(bank.maps.items()) if not args.map or m.id in args.map}
    models = sorted({model for key in maps for model in key})
    populations: list[tuple[Population, PairSample]] = []
    for name in args.population or list(DEVELOPMENT_POPULATIONS):
        found = usable_models(args.cache_dir, name, models, args.allow_partial)
        if len(found) < 2:
            print(f"{name}: caches of {len(found)} model(s) usable: not used")
            continue
        population = load_population(args.cache_dir, name, found)
        pairs = verification_pairs(population.identities, args.impostors, args.seed)
        people = len(set(population.identities.tolist()))
        print(
            f"{name}: {len(population)} photos of {people} people with a face for {', '.join(found)}; "
            f"{pairs.genuine_pairs} genuine, {pairs.impostor_pairs} impostor pairs"
        )
        populations.append((population, pairs))

    out = args.out or args.bank
    native: dict[tuple[str, str], ScoreSet] = {}
    written = 0
    for (source, target), loaded in maps.items():
        usable = [(p, s) for p, s in populations if source in p.clean and target in p.clean]
        if not usable:
            print(f"{loaded.id}: no population with caches of both models: no evaluation written")
            continue
        started = time.perf_counter()
        evaluation = evaluate_map(loaded, usable, native)
        path = evaluation_path(out, source, target)
        save_evaluation(path, evaluation)
        written += 1
        summary = ", ".join(
            f"{p.name}{' (in fit)' if p.in_fit else ''}: cross TAR@1e-3 {p.cross.tar_at_far['far_1e-3']:.4f} "
            f"native {p.native.tar_at_far['far_1e-3']:.4f}"
            for p in evaluation.populations
        )
        print(f"{loaded.id}: {summary} ({time.perf_counter() - started:.1f} s) -> {path.relative_to(out)}")
    print(f"{written} of {len(maps)} maps evaluated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
