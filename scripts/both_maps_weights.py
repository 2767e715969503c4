"""Whether the two maps of a both-maps comparison are better weighed unequally.

/verify compares a template of A with one of B through both direct maps with equal weights,
`(A->B(a) . b + a . B->A(b)) / 2`. Where one space decides better than the other (dlib-r29-128's, for
instance, against the others'), `w * A->B(a) . b + (1 - w) * a . B->A(b)` might do better. This study
scores each pair of models at several weights, on the same scored halves as scripts/map_lopo_study.py
(raw scores, against the raw natives), with the shipped maps or with maps of a leave-one-out variant
fitted without the scored population; then it picks each direction's weight on the *other* populations
(the best mean accuracy gap there) and judges the scored one with it, against equal weights.

Joined rows keep unit length (`sqrt(w)` and `sqrt(1 - w)` on the two parts), so w = 1 is the map
A->B alone and w = 0 the map B->A alone. Prints Markdown tables; writes nothing. (Run as a script:
its folder is then on the import path.)

    python scripts/both_maps_weights.py [--variant shipped|+fairface]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import map_lopo_study as lopo
import numpy as np

from facebridge.evaluation.population import Population
from facebridge.evaluation.sections import table_row as row
from facebridge.mapping.bank import MappingBank

WEIGHTS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)


@dataclass(frozen=True)
class Weighed:
    population: str
    direction: str
    weight: float  # on the direction's own map (A->B for A→B)
    result: lopo.Result


def weighed_rows(in_space: np.ndarray, in_other: np.ndarray, weight: float) -> np.ndarray:
    """`compare.joined_rows` with the two parts weighed `weight` and `1 - weight` in the dot product."""
    joined = np.concatenate([np.sqrt(weight) * in_space, np.sqrt(1.0 - weight) * in_other], axis=1)
    return joined.astype(np.float32)


def score_population(
    bank: MappingBank,
    name: str,
    populations: dict[str, Population],
    fairface: Population,
    variant: str,
    models: Sequence[str],
) -> list[Weighed]:
    fit_half, s = lopo.scored_half(populations[name], models, share=1.0)
    others = [populations[n] for n in lopo.POPULATIONS if n != name]
    variants = [v for v in lopo.VARIANTS if v.name == variant]
    directions = list(itertools.permutations(models, 2))
    maps = lopo.maps_of(bank, directions, variants, others, fit_half, fairface, 0, False, False)
    translated = {(a, b): apply(s.population.clean[a]) for v, a, b, apply, _ in maps if v == variant}
    out = []
    for a, b in itertools.combinations(models, 2):
        x, r = translated[(a, b)], translated[(b, a)]
        for weight in WEIGHTS:
            side_a = weighed_rows(x, s.population.clean[a], weight)
            side_b = weighed_rows(s.population.clean[b], r, weight)
            for gallery, probes, (g, p), w in (
                (side_a, side_b, (a, b), weight),
                (side_b, side_a, (b, a), 1 - weight),
            ):
                sides = lopo.Sides(gallery, probes, gallery, probes)  # raw only: no cohort is read
                (result,) = lopo.score(s, g, p, sides, name, f"w={w:g}", 0.0, normalised_too=False)
                out.append(Weighed(name, f"{g}→{p}", w, result))
    return out


def chosen_weight(results: list[Weighed], direction: str, others: Sequence[str]) -> float:
    """The weight with the best mean accuracy gap over `others` (ties: the one nearest 0.5)."""

    def mean_gap(weight: float) -> float:
        gaps = [
            r.result.accuracy_gap
            for r in results
            if r.direction == direction and r.population in others and abs(r.weight - weight) < 1e-9
        ]
        return round(float(np.mean(gaps)), 3)

    return max(WEIGHTS, key=lambda w: (mean_gap(w), -abs(w - 0.5)))


def summary(rs: Sequence[lopo.Result]) -> str:
    ok = sum(r.verification_ok for r in rs)
    ident = sum(r.identification_ok for r in rs)
    return f"{ok}/{len(rs)} ok, {ident}/{len(rs)} id ok, mean {np.mean([r.accuracy_gap for r in rs]):+.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant", default="+fairface", help="shipped, or a leave-one-out variant of map_lopo_study.py"
    )
    args = parser.parse_args(argv)
    models = list(lopo.MODELS)
    bank = MappingBank.load(lopo.ROOT / "mappings")
    populations = {n: lopo.load(lopo.ROOT / "cache", n, models) for n in lopo.POPULATIONS}
    fairface = lopo.unlabelled(lopo.ROOT / "cache", models)
    names = list(lopo.POPULATIONS)
    results = [
        r for n in names for r in score_population(bank, n, populations, fairface, args.variant, models)
    ]
    print(
        f"Maps: {args.variant}. Cells: directions that hold, search goal met, mean accuracy gap (points).\n"
    )
    print(row("weight on each direction's own map", *names))
    print("|---|" + "---:|" * len(names))
    for weight in WEIGHTS:
        cells = [
            summary([r.result for r in results if r.population == n and abs(r.weight - weight) < 1e-9])
            for n in names
        ]
        print(row(f"{weight:g}", *cells))
    chosen_cells, picks = [], []
    for n in names:
        others = [o for o in names if o != n]
        picked = []
        for direction in dict.fromkeys(r.direction for r in results):
            weight = chosen_weight(results, direction, others)
            picks.append(weight)
            picked += [
                r.result
                for r in results
                if r.population == n and r.direction == direction and abs(r.weight - weight) < 1e-9
            ]
        chosen_cells.append(summary(picked))
    print(row("chosen on the other populations", *chosen_cells))
    print("\nWeights chosen:", ", ".join(f"{w:g}: {picks.count(w)}" for w in WEIGHTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
