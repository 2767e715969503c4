"""What a refit on a deployment's own pairs is worth, measured on people neither map ever saw.

CelebA-dev's people are split in half by a seeded draw: half A plays the deployment's recorded
captures (every photo embedded by both models, as `POST /pairs` would store them), half B is scored.
For each direction, two maps are scored on half B:

- out of population: fitted on LFW alone (method chosen on LFW validation identities, as the bank does);
- refitted: `facebridge.mapping.refit.refit` on LFW plus half A (A's subjects split fit / validation /
  held-out by subject; calibrated on the held-out ones).

Printed per direction: cross accuracy and TAR@FAR 1e-3 on half B (every genuine pair, 1M impostor
pairs, both orders), the gain, and the FAR the refitted far_1e-3 threshold reaches on half B next to
the interval the refit states for it. Numpy only, from the embedding caches (facebridge embed-dataset).

    python scripts/refit_study.py [--augment flip --augment jitter] [--pair arcface-mbf128:sirius-mbf192]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from facebridge.evaluation.population import (
    PopulationMetrics,
    load_population,
    measure,
    pair_scores,
    verification_pairs,
)
from facebridge.evaluation.population_study import (
    CALIBRATION_IMPOSTORS,
    cross_scores,
    fit_estimator,
    selection_score,
    validation_scores,
)
from facebridge.mapping.mapfile import SpaceRef
from facebridge.mapping.refit import FittedTensors, RefitPlan, deployment_population, refit

PAIRS = (
    "arcface-mbf128:sirius-mbf192",
    "sirius-mbf192:arcface-mbf128",
    "arcface-mbf128:dlib-r29-128",
    "dlib-r29-128:arcface-mbf128",
)
METHODS = ("ridge", "residual-mlp")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--pair", action="append", help="SOURCE:TARGET (default: the four goal pairs)")
    parser.add_argument("--augment", action="append", default=[], help="LFW variants in the fit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = [tuple(p.split(":", 1)) for p in (args.pair or PAIRS)]
    models = sorted({m for p in pairs for m in p})
    lfw = load_population(args.cache_dir, "lfw", models, args.augment)
    celeba = load_population(args.cache_dir, "celeba-dev", models)
    people = np.unique(celeba.identities)
    half_a = set(np.random.default_rng(args.seed).choice(people, len(people) // 2, replace=False).tolist())
    in_a = np.array([i in half_a for i in celeba.identities.tolist()])
    recorded, scored = celeba.subset(in_a), celeba.subset(~in_a)
    print(
        f"LFW: {len(lfw)} photos of {len(np.unique(lfw.identities))} people (variants: "
        f"{', '.join(args.augment) or 'none'}); CelebA-dev half A (recorded pairs): {len(recorded)} photos "
        f"of {len(np.unique(recorded.identities))} people; half B (scored): {len(scored)} photos of "
        f"{len(np.unique(scored.identities))} people",
        flush=True,
    )
    score_pairs = verification_pairs(scored.identities, CALIBRATION_IMPOSTORS, args.seed)
    rows = []
    for source, target in pairs:
        started = time.time()
        metrics, _ = validation_scores(lfw, source, target, METHODS, args.augment, 0.15, args.seed)
        oop_method = max(METHODS, key=lambda m: selection_score(metrics[m]))
        oop = fit_estimator(lfw, source, target, oop_method, args.augment)
        before = measure(*cross_scores(oop, scored, source, target, score_pairs))

        deployment = deployment_population(
            recorded.identities, source, recorded.clean[source], target, recorded.clean[target]
        )
        refs = [SpaceRef(model=m, dim=lfw.clean[m].shape[1], sha256="0" * 64) for m in (source, target)]
        result = refit(
            deployment, refs[0], refs[1], base=lfw, current=FittedTensors.of(oop),
            plan=RefitPlan(methods=METHODS, base_augmentations=tuple(args.augment), seed=args.seed),
        )  # fmt: skip
        threshold = result.calibration.thresholds["far_1e-3"]
        native = min(
            (measure(*pair_scores(scored.clean[m], scored.clean[m], score_pairs)) for m in (source, target)),
            key=lambda m: m.accuracy,
        )
        scores, labels = _scores_of(result.fitted, scored, source, target, score_pairs)
        after = measure(scores, labels, {"far_1e-3": (threshold.threshold, 1e-3)})
        check = after.far_checks[0]
        interval, spread = threshold.far_interval, threshold.far_range
        inside = interval is not None and interval[0] <= check.far <= interval[1]
        inside_spread = spread is not None and spread[0] <= check.far <= spread[1]
        gain = (
            f"{(after.accuracy - before.accuracy) * 100:+.2f} / "
            f"{(after.tar_far_1e3 - before.tar_far_1e3) * 100:+.1f}"
        )
        rows.append(
            f"| {source} → {target} | {_pct(native)} | {oop_method} | {_pct(before)} | {result.choice} "
            f"| {_pct(after)} "
            f"| {gain} "
            f"| {check.far:.2e} | {_interval(interval)} ({'inside' if inside else 'OUTSIDE'}) "
            f"| {_interval(spread)} ({'inside' if inside_spread else 'OUTSIDE'}) "
            f"| {'yes' if result.improved else 'no'} |"
        )
        print(rows[-1], f"({time.time() - started:.0f} s)", flush=True)
    print()
    print(
        "| A → B | weaker native on half B: acc / TAR@1e-3 (%) | OOP method "
        "| OOP map on half B: acc / TAR@1e-3 (%) | refit chosen on validation subjects "
        "| refitted on half B: acc / TAR@1e-3 (%) | gain (pts) | FAR at refitted far_1e-3 on half B "
        "| Clopper-Pearson interval | subject-bootstrap far_range "
        "| refit judged better on its held-out subjects |"
    )
    print("|---|---:|---|---:|---|---:|---:|---:|---|---|---|")
    print("\n".join(rows))
    return 0


def _scores_of(fitted, population, source, target, pairs):  # type: ignore[no-untyped-def]
    """Cross scores of a fitted map file's tensors (what the service would serve)."""
    from facebridge.linalg import l2_normalize
    from facebridge.mapping.bank import apply_map_tensors

    moved = l2_normalize(
        apply_map_tensors(population.clean[source], fitted.weight, fitted.bias, fitted.residual)
    )
    return pair_scores(moved.astype(np.float32), population.clean[target], pairs)


def _interval(interval: tuple[float, float] | None) -> str:
    return "none" if interval is None else f"[{interval[0]:.2e}, {interval[1]:.2e}]"


def _pct(metrics: PopulationMetrics) -> str:
    return f"{metrics.accuracy * 100:.2f} / {metrics.tar_far_1e3 * 100:.1f}"


if __name__ == "__main__":
    sys.exit(main())
