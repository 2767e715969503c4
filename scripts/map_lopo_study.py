"""Maps fitted without the population they are scored on: which fitting data and estimator hold.

For each labelled development population in turn (the *scored* one), maps of each ordered pair of the
study models are fitted on photos of the *other* populations only (every photo, the same photo through
both models; labels only choose the early-stopping people) plus, unless a variant says otherwise, the
unlabelled fairface-val photos, and scored on half of the scored population's people. Variants add one
ingredient at a time, so each one's gain on unseen people is measured:

- `shipped`: the shipped map (fitted on LFW and CelebA development photos: on lfw and celeba-dev it
  saw the scored people, so it is not left out there);
- `others`: residual MLP on the other labelled populations, as they come (LFW dominates by size);
- `+fairface`: and the 5,000 fairface-val photos (seven race groups, no identities);
- `+balance`: every population resampled to the same number of rows (small ones repeated, large
  ones drawn without replacement), so one large population does not drown the rest;
- `+geometry`: a loss that keeps the batch's pairwise cosines and each row's direction;
- `+wide`: a hidden layer four times wider;
- `+ensemble`: three members averaged (one residual MLP in the map file);
- `+geometry+upsample` (a branch off `+geometry`): populations made equal by repeating the smaller
  ones up to the largest one's size, so that no photo of the largest is dropped;
- `+wide+augment` (a branch off `+wide`): and the downscaled and re-compressed (JPEG) variants of the
  fitting photos where cached (`facebridge.vision.augment`: capture conditions populations differ in).

The ceiling is the last variant fitted with the *other* half of the scored population's people added:
the most this family of map gives there with data of that population itself (its column names the
recipe, `ceiling (+wide)`). Natives, cross
verification (mapped A against native B, both orders, every genuine pair and up to 1,000,000 impostor
pairs) and open-set identification (half of the people enrolled; a gallery migrated A→B searched with
native B probes, against B's own gallery) for every direction.

Every comparison is also scored normalised, as /verify normalises it where a cohort of each model is
loaded (AS-norm against at most 1,000 photos of the scored population's other people, blended with
that cohort's own level; `--blend 1` for plain AS-norm), against the natives normalised the same way.

Numpy only, from the embedding caches (`cache/{population}-{model}.npz`). Writes the section
`leave-one-population-out` of docs/maps-across-populations.md (another with `--section`).

    python scripts/map_lopo_study.py [--population rmfd-dev] [--variant +balance] [--direction a:b]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from facebridge.cohort.asnorm import (
    DEFAULT_BLEND,
    DEFAULT_TOP_K,
    DEFAULT_TOP_K_SHARE,
    CohortScale,
    SideStats,
    cohort_scale,
    select,
    top_k_stats,
    top_k_stats_of_sides,
)
from facebridge.dataset_embedding import dataset_cache_path
from facebridge.evaluation.identification import IdentificationResult, identify, open_set_split
from facebridge.evaluation.population import DEVELOPMENT_POPULATIONS as POPULATIONS
from facebridge.evaluation.population import STUDY_MODELS as MODELS
from facebridge.evaluation.population import (
    Population,
    PopulationMetrics,
    as_unlabelled,
    fitting_rows,
    load_population,
    measure,
    pair_scores,
    resample_rows,
    split_people,
    verification_pairs,
)
from facebridge.evaluation.population_study import mapped
from facebridge.evaluation.sections import table_row as row
from facebridge.evaluation.sections import upsert_section
from facebridge.evaluation.verification import normalised_pair_scores
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.bank_fit import merge
from facebridge.mapping.compare import joined_rows
from facebridge.mapping.methods import MapEstimator
from facebridge.mapping.residual import ResidualMLPMap

ROOT = Path(__file__).resolve().parents[1]
UNLABELLED = "fairface-val"
IMPOSTORS = 1_000_000
BALANCED_ROWS = 4000
COHORT = 1000  # the most unlabelled photos of the scored population's other people AS-norm uses
# the bank shipped before the refit on every population (fitted on LFW and CelebA development photos):
# its "shipped" results in the log were renamed to this when the refitted bank replaced it
PREVIOUS = "bank before refit"


@dataclass(frozen=True)
class Variant:
    """One fitting recipe: which data and which residual MLP settings."""

    name: str
    fairface: bool = True
    balance: bool = False
    upsample: bool = False  # balance to the largest population's size instead of BALANCED_ROWS
    augment: bool = False
    params: dict[str, Any] = field(default_factory=dict)


GEOMETRY = {"similarity_weight": 1.0, "cosine_weight": 0.5}
VARIANTS = (
    Variant("others", fairface=False),
    Variant("+fairface"),
    Variant("+balance", balance=True),
    Variant("+geometry", balance=True, params=GEOMETRY),
    Variant("+wide", balance=True, params={**GEOMETRY, "hidden": 1024}),
    Variant("+ensemble", balance=True, params={**GEOMETRY, "hidden": 1024, "members": 3}),
    # a branch, not a step: +geometry keeping every photo of the largest population
    Variant("+geometry+upsample", balance=True, upsample=True, params=GEOMETRY),
    # a branch, not a step: +wide with the augmented variants of the fitting photos where cached
    Variant("+wide+augment", balance=True, augment=True, params={**GEOMETRY, "hidden": 1024}),
)
AUGMENTATIONS = ("downscale", "jpeg")


def cached_kinds(cache: Path, name: str, models: Sequence[str]) -> list[str]:
    """The augmentations of AUGMENTATIONS cached for `name` under every model."""
    return [
        kind
        for kind in AUGMENTATIONS
        if all(dataset_cache_path(cache, name, m, kind).exists() for m in models)
    ]


def load(cache: Path, name: str, models: Sequence[str]) -> Population:
    return load_population(cache, name, list(models), cached_kinds(cache, name, models))


def unlabelled(cache: Path, models: Sequence[str]) -> Population:
    """fairface-val: every photo its own person (it has no identity labels)."""
    return as_unlabelled(load(cache, UNLABELLED, models))


def balanced(populations: Sequence[Population], rows: int, seed: int) -> Population:
    """Each population resampled to `rows` photos: drawn without replacement when larger, repeated
    (every photo as often, the remainder drawn) when smaller."""
    rng = np.random.default_rng(seed)
    return merge([p.subset(resample_rows(len(p), rows, rng)) for p in populations])


def fitting_population(
    variant: Variant, labelled: Sequence[Population], fairface: Population | None, seed: int
) -> Population:
    parts = [*labelled, *([fairface] if variant.fairface and fairface is not None else [])]
    # identities prefixed by population: a name may recur across populations
    named = [
        Population(
            p.name,
            p.paths,
            np.char.add(f"{p.name}:", p.identities.astype(str)),
            p.clean,
            p.variants if variant.augment else {},
        )
        for p in parts
    ]
    if not variant.balance:
        return merge(named)
    return balanced(named, max(map(len, named)) if variant.upsample else BALANCED_ROWS, seed)


def fit(population: Population, source: str, target: str, variant: Variant, seed: int) -> MapEstimator:
    x, y, groups = fitting_rows(population, source, target, sorted(population.variants))
    return ResidualMLPMap(random_state=seed, **variant.params).fit(x, y, groups)


@dataclass(frozen=True)
class Sides:
    """Both sides of one comparison in its space, for the scored half and for the cohort: side a is
    A's templates (mapped into B, or joined for both maps), side b B's."""

    a: np.ndarray
    b: np.ndarray
    cohort_a: np.ndarray
    cohort_b: np.ndarray

    def stats(self) -> tuple[SideStats, SideStats]:
        """AS-norm statistics of each scored side against a cohort of the other side's kind, as /verify
        measures them (facebridge/cohort/scoring.py); a native comparison's two sides are one."""
        if self.a is self.b and self.cohort_a is self.cohort_b:
            same = top_k_stats(self.a, self.cohort_b, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE)
            return same, same
        return top_k_stats_of_sides(
            self.a, self.cohort_b, self.b, self.cohort_a, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE
        )

    def level(self, people: np.ndarray) -> CohortScale:
        """The cohort's own level in this comparison's space (asnorm.cohort_scale), `people` naming
        each cohort photo's person (both sides' cohorts are the same photos), as the service's blend
        uses it."""
        return cohort_scale(self.cohort_a, self.cohort_b, people, people, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE)


@dataclass(frozen=True)
class Measured:
    """Verification and identification of one comparison (a native, or a cross direction)."""

    verification: PopulationMetrics
    identification: IdentificationResult


@dataclass(frozen=True)
class Scored:
    """One population's scored half: its pairs, identification split, unlabelled cohort (photos of its
    other people) and its natives, raw and normalised (AS-norm blended with the cohort's own level,
    `share` of it AS-norm's: 1 is plain AS-norm)."""

    population: Population
    pairs: Any
    split: Any
    cohort: Population
    native: dict[str, Measured]
    native_norm: dict[str, Measured]
    share: float = DEFAULT_BLEND

    def measure(self, sides: Sides, normalised: bool) -> Measured:
        """Pairs scored a . b (both orders across spaces) and a gallery of side a's enrolled photos
        searched with side b's probes."""
        gallery = sides.a[self.split.gallery]
        identities = self.population.identities
        if not normalised:
            return Measured(
                measure(*pair_scores(sides.a, sides.b, self.pairs)),
                identify(gallery, sides.b, self.split, identities),
            )
        stats_a, stats_b = sides.stats()
        level = None if self.share == 1.0 else sides.level(self.cohort.identities)
        return Measured(
            measure(
                *normalised_pair_scores(sides.a, sides.b, self.pairs, stats_a, stats_b, level, self.share)
            ),
            identify(
                gallery,
                sides.b,
                self.split,
                identities,
                normalization=(select(stats_a, self.split.gallery), stats_b),
                level=level,
                share=self.share,
            ),
        )


def cohort_of(people: Population, seed: int = 0) -> Population:
    """At most COHORT photos of `people` (the scored population's other half), drawn with `seed`."""
    if len(people) <= COHORT:
        return people
    return people.subset(np.sort(np.random.default_rng(seed).choice(len(people), COHORT, replace=False)))


def native_sides(s_population: Population, cohort: Population, model: str) -> Sides:
    same = s_population.clean[model]
    return Sides(same, same, cohort.clean[model], cohort.clean[model])


def scored_half(
    population: Population, models: Sequence[str], share: float = DEFAULT_BLEND
) -> tuple[Population, Scored]:
    fit_half, scored = split_people(population)
    cohort = cohort_of(fit_half)
    pairs = verification_pairs(scored.identities, IMPOSTORS, 0)
    split = open_set_split(scored.identities)
    s = Scored(scored, pairs, split, cohort, {}, {}, share)
    for m in models:
        s.native[m] = s.measure(native_sides(scored, cohort, m), normalised=False)
        s.native_norm[m] = s.measure(native_sides(scored, cohort, m), normalised=True)
    return fit_half, s


@dataclass(frozen=True)
class Result:
    population: str
    direction: str
    variant: str
    accuracy_gap: float  # points against the weaker native
    tar_ratio: float  # cross TAR@1e-3 / weaker native's
    rank1_ratio: float  # migrated gallery / native B gallery
    fnir_ratio: float
    seconds: float

    @property
    def verification_ok(self) -> bool:
        return self.accuracy_gap >= -1.0 and self.tar_ratio >= 0.9

    @property
    def identification_ok(self) -> bool:
        return identification_ok(self.rank1_ratio, self.fnir_ratio)


RANK1_GOAL, FNIR_GOAL = 0.97, 1.1  # the migrated gallery against native B's: rank-1 ratio, FNIR ratio


def identification_ok(rank1_ratio: float, fnir_ratio: float) -> bool:
    return rank1_ratio >= RANK1_GOAL and fnir_ratio <= FNIR_GOAL


def normalised_label(share: float) -> str:
    """The column suffix of normalised results: plain AS-norm, or blended with the cohort's level."""
    return " + AS-norm" if share == 1.0 else f" + AS-norm blend {share:g}"


def score(
    s: Scored,
    a: str,
    b: str,
    sides: Sides,
    population: str,
    variant: str,
    seconds: float,
    normalised_too: bool = True,
) -> list[Result]:
    """Cross verification and identification of side a (A's templates in B's space) against side b,
    raw and (unless `normalised_too` is False) normalised, each against the natives scored the same
    way."""
    results = []
    kinds = ((False, s.native), (True, s.native_norm)) if normalised_too else ((False, s.native),)
    for normalised, natives in kinds:
        cross = s.measure(sides, normalised)
        weaker = min(natives[a].verification.accuracy, natives[b].verification.accuracy)
        weaker_tar = min(natives[a].verification.tar_far_1e3, natives[b].verification.tar_far_1e3)
        native = natives[b].identification
        results.append(
            Result(
                population,
                f"{a}→{b}",
                variant + (normalised_label(s.share) if normalised else ""),
                (cross.verification.accuracy - weaker) * 100,
                cross.verification.tar_far_1e3 / max(weaker_tar, 1e-9),
                cross.identification.rank1 / max(native.rank1, 1e-9),
                cross.identification.fnir / max(native.fnir, 1e-9),
                seconds,
            )
        )
    return results


BOTH_MAPS = " (both maps)"
Translated = dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray, float]]


def score_both_maps(s: Scored, translated: Translated, population: str) -> list[Result]:
    """Every direction whose reverse map was fitted with the same recipe, scored through both maps:
    a template of A against one of B, when both are kept (a gallery not migrated, searched with the
    other model's probes; /verify across models)."""
    results = []
    for (variant, a, b), (x, cohort_x, seconds) in translated.items():
        reverse = translated.get((variant, b, a))
        if reverse is None:
            continue
        # joined as the service joins them (facebridge.mapping.compare): (A->B(a) . b + a . B->A(b)) / 2
        scored, cohort = s.population.clean, s.cohort.clean
        sides = Sides(
            joined_rows(x, scored[a]),
            joined_rows(scored[b], reverse[0]),
            joined_rows(cohort_x, cohort[a]),
            joined_rows(cohort[b], reverse[1]),
        )
        results += score(s, a, b, sides, population, variant + BOTH_MAPS, seconds + reverse[2])
    return results


def accuracy_span(natives: dict[str, Measured]) -> str:
    accuracies = [m.verification.accuracy * 100 for m in natives.values()]
    return f"{min(accuracies):.2f}-{max(accuracies):.2f}%"


def direction_sides(s: Scored, a: str, b: str, x: np.ndarray, cohort_x: np.ndarray) -> Sides:
    return Sides(x, s.population.clean[b], cohort_x, s.cohort.clean[b])


Apply = Callable[[np.ndarray], np.ndarray]


def ceiling_name(recipe: Variant) -> str:
    """The ceiling's column: which recipe it was fitted with, the scored population's other half added."""
    return f"ceiling ({recipe.name})"


def maps_of(
    bank: MappingBank,
    directions: Sequence[tuple[str, str]],
    variants: Sequence[Variant],
    others: Sequence[Population],
    fit_half: Population,
    fairface: Population,
    seed: int,
    ceiling: bool,
    ceiling_only: bool,
) -> Iterator[tuple[str, str, str, Apply, float]]:
    """(variant, A, B, the map as a function, seconds it took to fit) for each direction: the shipped
    map, each variant fitted without the scored population, and the ceiling (the last variant with
    the scored population's other half added)."""
    for a, b in directions:
        path = bank.find_path(a, b)
        if path is not None and not ceiling_only:
            yield "shipped", a, b, partial(mapped_path, path), 0.0
        fits = [] if ceiling_only else [(v.name, v, list(others)) for v in variants]
        if ceiling and variants:
            fits.append((ceiling_name(variants[-1]), variants[-1], [*others, fit_half]))
        for name, variant, labelled in fits:
            data = fitting_population(variant, labelled, fairface, seed)
            started = time.perf_counter()
            estimator = fit(data, a, b, variant, seed)
            yield name, a, b, partial(mapped, estimator), time.perf_counter() - started


def run(
    cache: Path,
    names: Sequence[str],
    models: Sequence[str],
    directions: Sequence[tuple[str, str]],
    variants: Sequence[Variant],
    ceiling: bool,
    seed: int,
    log: Path,
    ceiling_only: bool = False,
    share: float = DEFAULT_BLEND,
) -> tuple[list[Result], dict[str, str]]:
    bank = MappingBank.load(ROOT / "mappings")
    populations = {n: load(cache, n, models) for n in POPULATIONS}
    fairface = unlabelled(cache, models)
    results, described = [], {}
    for name in names:
        fit_half, s = scored_half(populations[name], models, share)
        others = [populations[n] for n in POPULATIONS if n != name]
        described[name] = (
            f"{len(s.population)} photos of {len(np.unique(s.population.identities))} people scored "
            f"({s.pairs.genuine_pairs} genuine, {s.pairs.impostor_pairs} impostor pairs); "
            f"AS-norm cohort {len(s.cohort)} photos of its other people; natives' accuracy "
            f"{accuracy_span(s.native)} raw, {accuracy_span(s.native_norm)} normalised"
        )
        translated: Translated = {}
        fitted = maps_of(bank, directions, variants, others, fit_half, fairface, seed, ceiling, ceiling_only)
        for variant, a, b, apply, took in fitted:
            x, cohort_x = apply(s.population.clean[a]), apply(s.cohort.clean[a])
            translated[(variant, a, b)] = (x, cohort_x, took)
            for result in score(s, a, b, direction_sides(s, a, b, x, cohort_x), name, variant, took):
                results.append(result)
                record(log, result, described[name])
        for result in score_both_maps(s, translated, name):
            results.append(result)
            record(log, result, described[name])
    return results, described


def record(log: Path, result: Result, described: str) -> None:
    """Append one result to the JSON-lines log (runs over different populations or variants share it)."""
    line = json.dumps({**dataclasses.asdict(result), "described": described})
    print(line, flush=True)
    with log.open("a") as out:
        out.write(line + "\n")


def read_log(log: Path) -> tuple[list[Result], dict[str, str]]:
    """Every result in the log, the latest one winning where a (population, direction, variant) repeats."""
    latest: dict[tuple[str, str, str], Result] = {}
    described: dict[str, str] = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        described[row["population"]] = row.pop("described")
        result = Result(**row)
        latest[(result.population, result.direction, result.variant)] = result
    return list(latest.values()), dict(sorted(described.items(), key=lambda kv: POPULATIONS.index(kv[0])))


def mapped_path(path: Any, x: np.ndarray) -> np.ndarray:
    out = path.apply(np.ascontiguousarray(x))
    return np.asarray(out, np.float32)


TITLE = "Leave one population out: fitting data and estimators"


def markdown(
    results: list[Result],
    described: dict[str, str],
    variants: Sequence[str],
    command: str,
    title: str = TITLE,
) -> str:
    out = [
        f"## {title}",
        "",
        f"Measured with `{command}` ({time.strftime('%Y-%m-%d')}). Maps of each direction fitted "
        "on the other labelled populations (plus fairface-val where the variant says), never on the "
        "scored population's people; scored on half of its people. Each variant adds one ingredient "
        "to the one above it (see the script's docstring). *ok*: cross accuracy ≥ weaker native - 1.0 "
        "point and TAR@1e-3 ≥ 0.9x the weaker native's; *id ok*: migrated gallery's rank-1 ≥ 0.97x and "
        "FNIR@FPIR 1e-2 ≤ 1.1x native B's. *ceiling (recipe)*: that variant's data with the scored "
        "population's other half added. *+ AS-norm*: the same maps with every score AS-normalised "
        "(K = 5% of the cohort, each side against a cohort of the other side's kind), the "
        "cohort at most 1,000 unlabelled photos of the scored population's other people, judged against "
        "the natives normalised the same way (searches too: each search score normalised); *+ AS-norm "
        "blend 0.75*: as /verify normalises a score, `0.75 * AS-norm + 0.25 * (s - M) / D` with M, D "
        "the cohort's own level (facebridge/cohort/asnorm.py `cohort_scale`, each cohort photo's own "
        "person left out).",
        "",
        "### Summary: directions that hold, per population and variant",
        "",
        row("population", *variants),
        "|---|" + "---:|" * len(variants),
    ]
    for name in described:
        cells = []
        for v in variants:
            rs = [r for r in results if r.population == name and r.variant == v]
            if not rs:
                cells.append("")
                continue
            ok = sum(r.verification_ok for r in rs)
            ident = sum(r.identification_ok for r in rs)
            worst = min(r.accuracy_gap for r in rs)
            cells.append(f"{ok}/{len(rs)} ok, {ident}/{len(rs)} id ok, worst {worst:+.1f}")
        out.append(row(name, *cells))
    out += [
        "",
        "Mean accuracy gap (points) over the directions measured, and mean fit time per direction (on a "
        "shared 2-core machine):",
        "",
    ]
    out += [row("population", *variants), "|---|" + "---:|" * len(variants)]
    for name in described:
        cells = []
        for v in variants:
            rs = [r for r in results if r.population == name and r.variant == v]
            cells.append(
                f"{np.mean([r.accuracy_gap for r in rs]):+.2f} over {len(rs)} "
                f"({np.mean([r.seconds for r in rs]):.0f} s)"
                if rs
                else ""
            )
        out.append(row(name, *cells))
    for name, what in described.items():
        out += ["", f"### {name}: {what}", ""]
        out += [
            row("direction", *variants),
            "|---|" + "---:|" * len(variants),
        ]
        directions = list(dict.fromkeys(r.direction for r in results if r.population == name))
        for d in directions:
            cells = []
            for v in variants:
                r = next(
                    (r for r in results if r.population == name and r.direction == d and r.variant == v), None
                )
                cells.append(
                    ""
                    if r is None
                    else f"{r.accuracy_gap:+.1f} / {r.tar_ratio:.2f} / "
                    f"{r.rank1_ratio:.3f} / {r.fnir_ratio:.2f}"
                )
            out.append(row(d, *cells))
        out += ["", "Cells: accuracy gap (points) / TAR ratio / rank-1 ratio / FNIR ratio."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "cache", help="embedding caches (NAME-MODEL.npz)"
    )
    parser.add_argument(
        "--population", action="append", help=f"scored populations; default {', '.join(POPULATIONS)}"
    )
    parser.add_argument("--model", action="append", help=f"repeat; default {', '.join(MODELS)}")
    parser.add_argument(
        "--direction", action="append", help="SOURCE:TARGET, repeat; default every ordered pair"
    )
    parser.add_argument(
        "--variant", action="append", help=f"repeat; default all of {', '.join(v.name for v in VARIANTS)}"
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceiling fit")
    parser.add_argument(
        "--ceiling-only", action="store_true", help="only the ceiling (of the last --variant), nothing else"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds every draw and fit")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "maps-across-populations.md")
    parser.add_argument(
        "--log",
        type=Path,
        default=ROOT / "cache" / "map-lopo.jsonl",
        help="results are appended here; the report is written from every result in it",
    )
    parser.add_argument("--report-only", action="store_true", help="write the report from --log, fit nothing")
    parser.add_argument(
        "--blend",
        type=float,
        default=DEFAULT_BLEND,
        help="share of AS-norm in the normalised scores, the rest the cohort's own level (1: plain AS-norm)",
    )
    parser.add_argument(
        "--section", default="leave-one-population-out", help="the section of --out the report replaces"
    )
    parser.add_argument("--title", default=TITLE, help="the report's heading")
    parser.add_argument(
        "--shipped-only", action="store_true", help="score the shipped bank (mappings/) only, fit nothing"
    )
    args = parser.parse_args(argv)
    models = args.model or list(MODELS)
    directions = (
        [tuple(d.split(":", 1)) for d in args.direction]
        if args.direction
        else list(itertools.permutations(models, 2))
    )
    known = {v.name: v for v in VARIANTS}
    unknown = set(args.variant or ()) - set(known)
    if unknown:
        parser.error(f"unknown variant {sorted(unknown)}; choose from {', '.join(known)}")
    variants = [known[v] for v in args.variant] if args.variant else list(VARIANTS)
    if args.shipped_only:
        variants, args.no_ceiling = [], True
    names = args.population or list(POPULATIONS)
    if not args.report_only:
        ceiling = not args.no_ceiling
        run(
            args.cache,
            names,
            models,
            directions,
            variants,
            ceiling,
            args.seed,
            args.log,
            args.ceiling_only,
            args.blend,
        )
    results, described = read_log(args.log)
    normalised = list(dict.fromkeys([normalised_label(1.0), normalised_label(args.blend)]))
    order = [
        column
        for base in [PREVIOUS, "shipped", *(v.name for v in VARIANTS), *map(ceiling_name, VARIANTS)]
        for column in (
            base,
            base + BOTH_MAPS,
            *(base + suffix for suffix in normalised),
            *(base + BOTH_MAPS + suffix for suffix in normalised),
        )
    ]
    columns = [c for c in order if any(r.variant == c for r in results)]
    upsert_section(
        args.out,
        args.section,
        markdown(
            results,
            described,
            columns,
            f"python scripts/map_lopo_study.py ... --log {args.log.name}",
            args.title,
        ),
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
