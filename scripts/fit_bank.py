"""Fit the shipped mapping bank: a map for every ordered pair of recognizers, and same-space calibrations.

Fits on every labelled population given (their people pooled; e.g. all of LFW and the CelebA
development set), with the augmented variants named by --augment, from the embedding caches that
`facebridge embed-dataset` writes (cache/NAME-MODEL.npz, cache/NAME~KIND-MODEL.npz). Per pair, the
method is chosen on a validation fifth of the identities, quality and thresholds are cross-fitted on
the rest, and the shipped map is fitted on everyone (facebridge/mapping/bank_fit.py says why).

    python scripts/fit_bank.py --population lfw --population celeba-dev \\
        --augment lfw:flip --augment lfw:jitter --method ridge --method residual-mlp \\
        --far-factors docs/interchangeability/population-far-factors.json [--pair A:B] [--out mappings]

With --confidence-only (same populations, augmentations and methods as the bank was fitted with) the
maps in --out keep their weights, metadata and quality; only their per-template confidence predictor is
refitted, from the same identity split and folds (facebridge/mapping/bank_fit.py `fit_bank_confidence`),
with fold maps of the same method fitted on the clean photos only (a ridge map's penalty fixed at the
shipped map's), which costs minutes instead of hours.

--unlabelled NAME adds a population without identity labels (cache/NAME-MODEL.npz) to every fit, as
fitting rows only (each photo its own group); --balance ROWS resamples each population's fitting photos
(the unlabelled one's too) to ROWS, seeded; --param KEY=VALUE sets a residual-mlp parameter (repeat).
Verification pairs (selection, quality, thresholds, confidence) use the labelled photos as they are.
The map's provenance lists each population it saw, with the source and terms of its SOURCE.txt
(--datasets).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from facebridge import __version__
from facebridge.dataset_embedding import dataset_cache_path
from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.population import (
    FittingData,
    Population,
    as_unlabelled,
    load_population,
    population_origin,
)
from facebridge.mapping.bank_fit import (
    BankRecipe,
    fit_bank_confidence,
    fit_bank_map,
    merge,
    space_calibration,
    widen,
)
from facebridge.mapping.mapfile import (
    MAP_SUFFIX,
    SPACE_SUFFIX,
    MapCalibration,
    SpaceCalibration,
    SpaceRef,
    load_map,
    load_space,
    map_filename,
    save_map,
    save_space,
)
from facebridge.mapping.residual import ResidualMLPMap

ROOT = Path(__file__).resolve().parents[1]

MODELS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128", "hse-mobilenet1024"]


def space_ref(cache_dir: Path, dataset: str, model: str) -> SpaceRef:
    meta = EmbeddingCache.load(dataset_cache_path(cache_dir, dataset, model)).meta
    return SpaceRef(model=model, dim=int(str(meta["dim"])), sha256=str(meta["model_sha256"]))


def widen_bank(out: Path, recipe: BankRecipe) -> None:
    """Restate every map's and space's far_range with the given factors (metadata only; the tensors
    and their digest are unchanged), for factors measured after the bank was fitted."""
    for path in sorted(out.glob(f"*{MAP_SUFFIX}")):
        tensors = load_map(path)
        calibration = tensors.meta.calibration
        if calibration is None:
            continue
        update = MapCalibration(
            cross=widen(calibration.cross, recipe), mapped=widen(calibration.mapped, recipe)
        )
        meta = tensors.meta.model_copy(update={"calibration": update})
        save_map(path, meta, tensors.weight, tensors.bias, tensors.residual, tensors.confidence)
        print(f"{path.name}: far_range {update.cross.thresholds['far_1e-3'].far_range}")
    for path in sorted((out / "spaces").glob(f"*{SPACE_SUFFIX}")):
        space = load_space(path)
        save_space(path, space.model_copy(update={"calibration": widen(space.calibration, recipe)}))
        print(f"{path.name}: far_range {load_space(path).calibration.thresholds['far_1e-3'].far_range}")


def add_confidence(
    out: Path,
    pairs: list[tuple[str, str]],
    choose: Callable[[str, str], tuple[Population, BankRecipe]],
) -> None:
    """Fit and store the confidence predictor of each existing map, its weights and metadata untouched."""
    print("| map | method | predictor rows | identities | alpha | CV Spearman | mean actual | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for source, target in pairs:
        start = time.perf_counter()
        path = out / map_filename(source, target)
        tensors = load_map(path)
        population, recipe = choose(source, target)
        meta = tensors.meta
        # fold maps on the clean photos, a ridge map's penalty fixed at the shipped map's: the full recipe
        # (augmented rows, every hyperparameter cross-validated again) costs hours on a small machine
        params = {"alphas": (meta.fitted["alpha_"],)} if meta.method == "ridge" else None
        clean_recipe = replace(recipe, augmentations=())
        model, heldout = fit_bank_confidence(population, source, target, meta.method, clean_recipe, params)
        if model is None:
            print(f"| {meta.id} | too few held-out rows: no predictor |")
            continue
        penalty = f", ridge alpha fixed at the shipped map's {params['alphas'][0]:g}" if params else ""
        info = model.info(
            f"{heldout}; fold maps fitted on clean photos only{penalty}; shipped weights unchanged"
        )
        save_map(path, tensors.meta, tensors.weight, tensors.bias, tensors.residual, model.tensors(), info)
        print(
            f"| {tensors.meta.id} | {tensors.meta.method} | {info.rows} | {info.identities} | {info.alpha:g} "
            f"| {info.spearman:.3f} | {info.mean_actual:.4f} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )


def parse_params(specs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs of residual-mlp parameters, values as int or float."""
    known = set(ResidualMLPMap().get_params())
    params: dict[str, Any] = {}
    for spec in specs:
        key, sep, text = spec.partition("=")
        if not sep or key not in known:
            raise ValueError(
                f"--param {spec!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}"
            )
        try:
            params[key] = int(text)
        except ValueError:
            try:
                params[key] = float(text)
            except ValueError:
                raise ValueError(f"--param {spec!r}: the value must be a number") from None
    return params


def _has_variants(cache_dir: Path, dataset: str, model: str, kinds: list[str]) -> bool:
    return all(dataset_cache_path(cache_dir, dataset, model, kind).exists() for kind in kinds)


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
    parser.add_argument(
        "--widen-only",
        action="store_true",
        help="only restate far_range of the bank in --out (--far-factors)",
    )
    parser.add_argument(
        "--confidence-only",
        action="store_true",
        help="only (re)fit the confidence predictors of the maps in --out; weights stay as they are",
    )
    parser.add_argument(
        "--unlabelled", metavar="NAME", help="a population without identity labels: fitting rows only"
    )
    parser.add_argument(
        "--balance", type=int, metavar="ROWS", help="resample each population's fitting photos to ROWS"
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="residual-mlp parameter; repeat"
    )
    parser.add_argument(
        "--prefer-earlier-within",
        type=float,
        default=0.0,
        metavar="MARGIN",
        help="keep an earlier --method (cheaper to serve) unless a later one scores more than MARGIN "
        "above it on validation (accuracy + TAR@1e-3; default 0: the best wins)",
    )
    parser.add_argument(
        "--datasets",
        type=Path,
        default=ROOT.parent / "shared" / "datasets",
        help="population folders whose SOURCE.txt the provenance cites",
    )
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    parser.add_argument("--out", type=Path, default=ROOT / "mappings")
    args = parser.parse_args()
    try:
        params = parse_params(args.param)
    except ValueError as exc:
        parser.error(str(exc))
    if args.balance is not None and args.balance < 1:
        parser.error("--balance must be at least 1")
    models = args.model or MODELS
    kinds: dict[str, list[str]] = {}
    for spec in args.augment:
        name, kind = spec.split(":", 1)
        kinds.setdefault(name, []).append(kind)
    clean = merge([load_population(args.cache_dir, name, models) for name in args.population])
    augmented_models = [
        m
        for m in models
        if all(_has_variants(args.cache_dir, n, m, kinds.get(n, [])) for n in args.population)
    ]
    augmented = merge(
        [load_population(args.cache_dir, n, augmented_models, kinds.get(n, [])) for n in args.population]
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
    unlabelled = (
        as_unlabelled(load_population(args.cache_dir, args.unlabelled, models)) if args.unlabelled else None
    )
    names = [*args.population, *([args.unlabelled] if args.unlabelled else [])]
    recipe = BankRecipe(
        methods=tuple(args.method or ["ridge"]),
        augmentations=all_kinds,
        far_factors=factors,
        far_note=note,
        data=FittingData(unlabelled, args.balance),
        params={"residual-mlp": params} if params else {},
        origins={name: population_origin(args.datasets / name) for name in names},
        prefer_earlier_within=args.prefer_earlier_within,
    )
    if args.widen_only:
        widen_bank(args.out, recipe)
        return 0
    pairs = [tuple(p.split(":", 1)) for p in args.pair] if args.pair else itertools.permutations(models, 2)

    def choose(source: str, target: str) -> tuple[Population, BankRecipe]:
        """Augmented variants where both models have them (the others use clean photos only)."""
        if source in augmented_models and target in augmented_models:
            return augmented, recipe
        return clean, replace(recipe, augmentations=())

    if args.confidence_only:
        add_confidence(args.out, [(s, t) for s, t in pairs], choose)
        return 0
    refs = {m: space_ref(args.cache_dir, args.population[0], m) for m in models}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (args.out / "spaces").mkdir(parents=True, exist_ok=True)
    if not args.no_spaces:
        for model in models:
            calibration = space_calibration(clean, model, recipe)
            space = SpaceCalibration(
                space=refs[model],
                dataset=clean.name,
                images=len(clean),
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
    print("| map | method | mean cosine | R2 | source native | target native | mapped | cross | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for source, target in pairs:
        start = time.perf_counter()
        population, pair_recipe = choose(source, target)
        fitted = fit_bank_map(population, refs[source], refs[target], pair_recipe)
        confidence = fitted.confidence.tensors() if fitted.confidence is not None else None
        meta = save_map(
            args.out / map_filename(source, target),
            fitted.meta,
            fitted.weight,
            fitted.bias,
            fitted.residual,
            confidence,
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
