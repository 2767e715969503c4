"""What each ingredient of a map is worth out of population: data size, augmentation kind, estimator.

Maps are fitted on LFW only and scored on the CelebA development people (every genuine pair, 2M
impostor pairs, both orders), for a few hard pairs. One change at a time against a baseline:
- data: LFW's 7,701 pair photos (what the old bank used) vs all 13,233 photos;
- augmentation: all photos plus the variants of one kind, for the same 4,000-photo subset of every
  kind (`facebridge embed-dataset --subset 4000`), so kinds are compared on equal terms;
- estimator: each method on all clean photos.
Writes the table as the `ingredients` section of docs/interchangeability.md.

    python scripts/ingredients_study.py [--pair A:B ...] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HARD_PAIRS = ["arcface-mbf128:dlib-r29-128", "arcface-mbf128:sirius-mbf192", "dlib-r29-128:arcface-mbf128"]
KINDS = ["flip", "jitter", "blur", "downscale", "jpeg", "grayscale", "exposure", "occlusion"]
ESTIMATORS = ["ridge", "lowrank", "procrustes-std", "softmax", "residual-mlp"]
SUBSET = 4000


def _configs() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(row label, data, method, kinds): the baseline and one change at a time."""
    rows: list[tuple[str, str, str, tuple[str, ...]]] = [
        ("LFW pair photos only (7,701)", "pairs", "ridge", ())
    ]
    rows += [(f"all photos, {m}", "all", m, ()) for m in ESTIMATORS]
    rows += [(f"all photos + {k} ({SUBSET:,}), residual-mlp", "all", "residual-mlp", (k,)) for k in KINDS]
    return rows


def subset_paths(cache_dir: Path, model: str) -> list[str]:
    """The photos of the 4,000-photo augmentation subset (read off one kind built with --subset)."""
    from facebridge.dataset_embedding import dataset_cache_path
    from facebridge.embedding_cache import EmbeddingCache

    return EmbeddingCache.load(dataset_cache_path(cache_dir, "lfw", model, "blur")).paths.tolist()


def run_one(task: tuple[str, str, str, str, tuple[str, ...], str]) -> tuple[str, str, float, float, int]:
    """Fit one configuration for one pair on LFW and score it on CelebA."""
    label, pair, data, method, kinds, cache_dir = task
    import numpy as np

    from facebridge.evaluation.lfw import pair_images, read_pairs
    from facebridge.evaluation.population import load_population, measure, pair_scores, verification_pairs
    from facebridge.evaluation.population_study import fit_estimator, mapped

    source, target = pair.split(":")
    models = [source, target]
    lfw = load_population(Path(cache_dir), "lfw", models, list(kinds))
    if data == "pairs":
        wanted = set(pair_images(read_pairs(ROOT.parent / "shared/datasets/lfw/pairs.txt")))
        lfw = lfw.subset(np.array([p in wanted for p in lfw.paths.tolist()]))
    for kind in kinds:  # every kind on the same photos: those the --subset kinds were built for
        base, embeddings = lfw.variants[kind]
        keep = np.isin(lfw.paths[base], subset_paths(Path(cache_dir), source))
        lfw.variants[kind] = (base[keep], {m: e[keep] for m, e in embeddings.items()})
    celeba = load_population(Path(cache_dir), "celeba-dev", models)
    estimator = fit_estimator(lfw, source, target, method, kinds)
    pairs = verification_pairs(celeba.identities)
    metrics = measure(*pair_scores(mapped(estimator, celeba.clean[source]), celeba.clean[target], pairs))
    rows = len(lfw) + sum(len(lfw.variants[k][0]) for k in kinds)
    return label, pair, metrics.accuracy, metrics.tar_far_1e3, rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pair", action="append", help="A:B (default: three hard pairs)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (each single-threaded)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "interchangeability.md")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    pairs = args.pair or HARD_PAIRS
    tasks = [(label, p, d, m, k, str(args.cache_dir)) for label, d, m, k in _configs() for p in pairs]
    results: dict[tuple[str, str], tuple[float, float, int]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for label, pair, accuracy, tar, rows in pool.map(run_one, tasks):
            results[(label, pair)] = (accuracy, tar, rows)
            print(f"{label} | {pair} | {accuracy * 100:.2f} | {tar * 100:.1f} | {rows}", flush=True)
    from facebridge.evaluation.population_report import short
    from facebridge.evaluation.sections import command_line, upsert_section

    header = " | ".join(f"{short(p.split(':')[0])} → {short(p.split(':')[1])}" for p in pairs)
    lines = [
        "## Ingredients: what data size, augmentation and estimator are each worth (out of population)",
        "",
        f"Measured with `{command_line('scripts/ingredients_study.py')}`.",
        "",
        "Fitted on LFW only, scored on the CelebA development people (every genuine pair and 2,000,000 "
        "impostor pairs, both orders): cross accuracy (%) / cross TAR@FAR 1e-3 (%). One change at a time; "
        f"every augmentation kind adds the variants of the same {SUBSET:,} photos.",
        "",
        f"| configuration | fitting rows | {header} |",
        "|---|---:|" + "---:|" * len(pairs),
    ]
    for label, _, _, _ in _configs():
        cells = " | ".join(
            f"{results[(label, p)][0] * 100:.2f} / {results[(label, p)][1] * 100:.1f}" for p in pairs
        )
        lines.append(f"| {label} | {results[(label, pairs[0])][2]:,} | {cells} |")
    upsert_section(args.report, "ingredients", "\n".join(lines) + "\n")
    print(f"wrote the ingredients section of {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
