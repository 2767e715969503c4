"""LFW fold-aware cross verification of the old recipe and the new one, every ordered pair.

Per LFW fold, maps are fitted only on people not tested in that fold (facebridge/evaluation/interchange.py):
- `ridge, pair photos`: ridge on the 7,701 pair photos (the recipe of the earlier bank and table);
- `ridge, all + celeba`: ridge on every LFW photo of the other folds' people plus the CelebA people;
- `residual-mlp, all + celeba`: the residual MLP on the same rows.
Every recipe is tested on the same photos: the 6,000 listed pairs for accuracy, all-vs-all pairs of the
fold's pair photos for TAR at FAR 1e-3/1e-4.
Needs only numpy: `--export FILE` packs the caches (float16) so the study can run on a many-core
machine; `--data FILE` runs from such a pack, one process per direction and recipe.

    python scripts/lfw_fold_study.py --export cache/lfw-fold-study.npz
    python scripts/lfw_fold_study.py --data cache/lfw-fold-study.npz --jobs 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

# one BLAS thread per process: the study runs one process per direction and recipe
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

MODELS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128"]
RECIPES = ["ridge, pair photos", "ridge, all + celeba", "residual-mlp, all + celeba"]
# the shipped bank's recipe: its chosen method per pair, and flip + jitter variants of every fitting photo
# (read from the embedding caches in cache/, so this one runs where the caches are)
BANK_RECIPE = "bank: chosen method, all + celeba + flip + jitter"
VARIANTS = ("flip", "jitter")


def variant_rows(cache_dir: Path, source: str, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, identity) of the flip and jitter variants of LFW and CelebA photos (CelebA prefixed)."""
    from facebridge.dataset_embedding import dataset_cache_path
    from facebridge.embedding_cache import EmbeddingCache
    from facebridge.linalg import l2_normalize

    xs, ys, ids = [], [], []
    for dataset in ("lfw", "celeba-dev"):
        for kind in VARIANTS:
            a = EmbeddingCache.load(dataset_cache_path(cache_dir, dataset, source, kind))
            b = EmbeddingCache.load(dataset_cache_path(cache_dir, dataset, target, kind))
            rows = b.index()
            shared = [p for p in a.paths.tolist() if p in rows]
            xs.append(l2_normalize(a.lookup(shared).astype(np.float64)))
            ys.append(l2_normalize(b.embeddings[[rows[p] for p in shared]].astype(np.float64)))
            prefix = "" if dataset == "lfw" else "celeba/"
            ids.append(np.array([prefix + p.split("/", 1)[0] for p in shared]))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ids)


def export(out: Path, cache_dir: Path, lfw: Path) -> None:
    from facebridge.dataset_embedding import dataset_cache_path
    from facebridge.embedding_cache import EmbeddingCache

    arrays: dict[str, Any] = {"pairs": np.array(Path(lfw / "pairs.txt").read_text())}
    for dataset in ("lfw", "celeba-dev"):
        caches = {m: EmbeddingCache.load(dataset_cache_path(cache_dir, dataset, m)) for m in MODELS}
        paths = caches[MODELS[0]].paths
        for m, cache in caches.items():
            if not np.array_equal(cache.paths, paths):
                raise ValueError(f"{dataset}: caches of {MODELS[0]} and {m} hold different photos")
            arrays[f"{dataset}/{m}"] = cache.embeddings.astype(np.float16)
        detected = np.logical_and.reduce([c.detected for c in caches.values()])
        arrays[f"{dataset}/paths"] = paths.astype(str)
        arrays[f"{dataset}/detected"] = detected
    np.savez_compressed(out, **arrays)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB")


def run_direction(task: tuple[str, str, str, str]) -> tuple[str, str, str, dict[str, float]]:
    """One recipe for one direction: fold-aware cross (and mapped) metrics on LFW."""
    source, target, recipe, data_file = task
    import tempfile

    from facebridge.evaluation.interchange import direction_scores, native_scores, paired_lfw, summarise
    from facebridge.evaluation.lfw import pair_images, read_pairs
    from facebridge.linalg import l2_normalize
    from facebridge.mapping.methods import make_map

    data = np.load(data_file, allow_pickle=False)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as handle:
        handle.write(str(data["pairs"]))
        handle.flush()
        pairs = read_pairs(Path(handle.name))

    only_pairs = recipe == "ridge, pair photos"
    bank_recipe = recipe == BANK_RECIPE
    if bank_recipe:
        from facebridge.mapping.bank import MappingBank

        method = MappingBank.load(ROOT / "mappings").maps[(source, target)].meta.method
        var_x, var_y, var_ids = variant_rows(ROOT / "cache", source, target)
    keep = (
        np.isin(data["lfw/paths"], pair_images(pairs))
        if only_pairs
        else np.ones(len(data["lfw/paths"]), bool)
    )

    class Pack:  # what paired_lfw reads off an embedding cache: meta, embeddings and index()
        def __init__(self, model: str):
            self.meta = {"model": model}
            self.paths = data["lfw/paths"][keep]
            self.embeddings = data[f"lfw/{model}"][keep].astype(np.float32)

        def index(self) -> dict[str, int]:
            return {str(p): i for i, p in enumerate(self.paths)}

    source_pack = Pack(source)
    paired = paired_lfw(source_pack, Pack(target), pairs)  # type: ignore[arg-type]
    # all-vs-all TAR over the pair photos only, whatever the recipe fits on, so recipes share a test set
    # (fitting still excludes every photo of the fold's people)
    is_pair_photo = np.isin(np.array(sorted(source_pack.index())), pair_images(pairs))
    fold_rows = paired.test_rows
    paired.test_rows = lambda fold: fold_rows(fold) & is_pair_photo  # type: ignore[method-assign]
    detected = data["celeba-dev/detected"]
    extra_x = l2_normalize(data[f"celeba-dev/{source}"][detected].astype(np.float64))
    extra_y = l2_normalize(data[f"celeba-dev/{target}"][detected].astype(np.float64))
    extra_g = np.array(["celeba/" + p.split("/", 1)[0] for p in data["celeba-dev/paths"][detected].tolist()])
    if not bank_recipe:
        method = recipe.split(",")[0]

    def fitter(x: np.ndarray, y: np.ndarray, groups: np.ndarray):  # type: ignore[no-untyped-def]
        estimator = make_map(method)
        if only_pairs:
            estimator.fit(x, y, groups)
        elif bank_recipe:  # variants of the fitting people's photos only: never of the fold's people
            keep = np.isin(var_ids, np.r_[groups, extra_g])
            estimator.fit(
                np.r_[x, extra_x, var_x[keep]],
                np.r_[y, extra_y, var_y[keep]],
                np.r_[groups, extra_g, var_ids[keep]],
            )
        else:
            estimator.fit(np.r_[x, extra_x], np.r_[y, extra_y], np.r_[groups, extra_g])
        return estimator

    scores = direction_scores(paired, fitter)
    cross = summarise(scores.cross, paired.labels, paired.folds)
    mapped = summarise(scores.mapped, paired.labels, paired.folds)
    native_b = summarise(native_scores(paired.b, paired), paired.labels, paired.folds)
    return (
        source,
        target,
        recipe,
        {
            "cross": cross.accuracy,
            "cross_std": cross.accuracy_std,
            "cross_tar3": cross.tar_far_1e3,
            "cross_tar4": cross.tar_far_1e4,
            "mapped": mapped.accuracy,
            "native_b": native_b.accuracy,
        },
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--export", type=Path, help="write the compact pack here and stop")
    parser.add_argument("--data", type=Path, help="run from this pack")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--recipe",
        action="append",
        choices=[*RECIPES, BANK_RECIPE],
        help="only these (default: the first three)",
    )
    parser.add_argument("--pair", action="append", metavar="A:B", help="only these directions")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "datasets" / "lfw")
    args = parser.parse_args()
    if args.export:
        export(args.export, args.cache_dir, args.lfw)
        return 0
    if args.data is None:
        parser.error("give --export or --data")
    recipes = args.recipe or list(RECIPES)
    pairs = (
        [tuple(p.split(":", 1)) for p in args.pair] if args.pair else list(itertools.permutations(MODELS, 2))
    )
    # the slow (residual-MLP) tasks first, so they start early
    order = sorted(recipes, key=lambda r: "mlp" not in r and r != BANK_RECIPE)
    tasks = [(s, t, r, str(args.data)) for r in order for s, t in pairs]
    print("| A → B | recipe | cross acc (%) | cross TAR@1e-3 (%) | cross TAR@1e-4 (%) | mapped (%) |")
    print("|---|---|---:|---:|---:|---:|")
    with ProcessPoolExecutor(args.jobs) as pool:
        for future in as_completed([pool.submit(run_direction, task) for task in tasks]):
            source, target, recipe, m = future.result()
            print(
                f"| {source} → {target} | {recipe} | {m['cross'] * 100:.2f} ± {m['cross_std'] * 100:.2f} "
                f"| {m['cross_tar3'] * 100:.2f} | {m['cross_tar4'] * 100:.2f} | {m['mapped'] * 100:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
