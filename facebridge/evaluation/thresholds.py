"""Do thresholds keep their FAR on a population they were not calibrated on, raw and AS-normalised?

Each population's people are split in two halves by a seeded draw: the scored half gives every genuine
pair and a seeded sample of impostor pairs; the other half gives the cohort (at most `max_cohort`
photos, used without their labels), as a deployment would give its own gallery. A comparison is a
native space (A vs A) or a cross direction (A mapped into B against native B, both orders), always
through the loaded maps. Thresholds are calibrated on the other populations pooled with equal weight
and applied to the scored one; the reached FAR is counted on its impostor pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from facebridge.cohort.asnorm import (
    DEFAULT_BLEND,
    DEFAULT_DEVIATION_POWER,
    DEFAULT_TOP_K,
    DEFAULT_TOP_K_SHARE,
    CohortScale,
    SideStats,
    as_norm,
    blend,
    cohort_scale,
    top_k_stats_of_sides,
)
from facebridge.cohort.calibration_set import (
    CalibrationEntry,
    CalibrationSet,
    NormalizationInfo,
    PopulationInfo,
    SetKind,
)
from facebridge.cohort.scoring import comparison_key, comparison_pins
from facebridge.evaluation.population import PairSample, Population
from facebridge.evaluation.verification import rowdot, verification_pairs
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.calibration import Calibration, calibrate_pooled, widen_for_population
from facebridge.mapping.compare import both_maps_plan, plan_comparison

DEFAULT_MAX_COHORT = 1000
CohortSides = Literal["other-kind", "same-kind", "native"]
STUDY_IMPOSTORS = 1_000_000


@dataclass(frozen=True)
class Comparison:
    """`source` templates compared with native `target` templates in `target`'s space; with
    `both_maps`, in both spaces at once through the two direct maps (facebridge.mapping.compare)."""

    source: str
    target: str
    both_maps: bool = False

    @property
    def native(self) -> bool:
        return self.source == self.target

    @property
    def label(self) -> str:
        if self.both_maps:
            return f"{self.source}⇄{self.target}"
        return self.target if self.native else f"{self.source}→{self.target}"


def comparisons(models: Sequence[str], both_maps: bool = False) -> list[Comparison]:
    """The natives first, then every ordered cross direction; with `both_maps`, then each pair of
    models through both maps (one comparison per pair: its score is symmetric)."""
    natives = [Comparison(m, m) for m in models]
    cross = [Comparison(a, b) for a in models for b in models if a != b]
    if not both_maps:
        return natives + cross
    return natives + cross + [Comparison(a, b, True) for i, a in enumerate(models) for b in models[i + 1 :]]


@dataclass(frozen=True)
class PopulationSplit:
    """A population's scored people and an unlabelled cohort of its other people."""

    name: str
    scored: Population
    cohort: Population
    pairs: PairSample


def split_population(
    population: Population,
    seed: int = 0,
    max_cohort: int = DEFAULT_MAX_COHORT,
    max_impostors: int = STUDY_IMPOSTORS,
) -> PopulationSplit:
    """Half of the people scored, photos of the other half (at most `max_cohort`) as the cohort."""
    rng = np.random.default_rng(seed)
    people = rng.permutation(np.unique(population.identities))
    cohort_people = set(people[: len(people) // 2])
    in_cohort = np.array([i in cohort_people for i in population.identities])
    cohort_rows = np.flatnonzero(in_cohort)
    if len(cohort_rows) > max_cohort:
        cohort_rows = np.sort(rng.choice(cohort_rows, max_cohort, replace=False))
    scored = population.subset(~in_cohort)
    cohort = population.subset(cohort_rows)
    return PopulationSplit(
        population.name, scored, cohort, verification_pairs(scored.identities, max_impostors, seed)
    )


@dataclass(frozen=True)
class ComparisonScores:
    """Raw and normalised scores of a comparison's genuine and impostor pairs on one population."""

    raw_genuine: np.ndarray
    raw_impostor: np.ndarray
    norm_genuine: np.ndarray
    norm_impostor: np.ndarray
    # the scored person of each genuine pair (its left photo's), for intervals over the people
    genuine_people: np.ndarray | None = None


def pair_orders(comparison: Comparison, pairs: PairSample) -> list[tuple[np.ndarray, np.ndarray]]:
    """(left, right) indices of the scored pairs as (side a, side b): a cross direction scores each
    pair both ways (either photo may be the mapped one), a native once."""
    orders = [(pairs.left, pairs.right)]
    if not comparison.native:
        orders.append((pairs.right, pairs.left))
    return orders


def comparison_sides(
    bank: MappingBank, comparison: Comparison, population: Population
) -> tuple[np.ndarray, np.ndarray]:
    """(side a, side b) unit templates in the comparison space: a mapped from the source when it
    differs from the target, b native."""
    b = population.clean[comparison.target]
    if comparison.native:
        return b, b
    if comparison.both_maps:
        plan = both_maps_plan(bank, comparison.source, comparison.target)
        if plan is None:
            raise ValueError(f"{comparison.label}: no direct maps both ways")
        return plan.sides(population.clean[comparison.source], b)
    path = bank.find_path(comparison.source, comparison.target)
    if path is None:
        raise ValueError(f"no map from {comparison.source} to {comparison.target}")
    return path.apply(np.ascontiguousarray(population.clean[comparison.source])), b


def sized_cohort(cohort: Population, size: int | None) -> Population:
    """A seeded sample of `size` of the cohort's photos (the whole cohort without `size`)."""
    if size is None or size >= len(cohort):
        return cohort
    return cohort.subset(np.sort(np.random.default_rng(size).choice(len(cohort), size, replace=False)))


def side_stats(
    bank: MappingBank,
    comparison: Comparison,
    split: PopulationSplit,
    cohort: Population | None = None,
    top_k: int = DEFAULT_TOP_K,
    size: int | None = None,
    sides: CohortSides = "other-kind",
    share: float | None = DEFAULT_TOP_K_SHARE,
) -> tuple[SideStats, SideStats]:
    """AS-norm statistics of the scored templates' two sides. By default each side is measured against
    a cohort of the other side's kind (a mapped template against native cohort templates, a native one
    against mapped ones): the scores a side's impostors give it are scores against the other side's
    kind. `same-kind` and `native` are the alternatives the study compares it with. K is `share` of
    the cohort within [10, `top_k`] (asnorm.top_k_for), or `top_k` itself when `share` is None."""
    cohort = sized_cohort(cohort if cohort is not None else split.cohort, size)
    a, b = comparison_sides(bank, comparison, split.scored)
    cohort_a, cohort_b = comparison_sides(bank, comparison, cohort)
    if sides == "same-kind":
        cohort_a, cohort_b = cohort_b, cohort_a
    elif sides == "native":
        cohort_a = cohort_b
    return top_k_stats_of_sides(a, cohort_b, b, cohort_a, top_k, share)


def comparison_scores(
    bank: MappingBank,
    comparison: Comparison,
    split: PopulationSplit,
    stats: tuple[SideStats, SideStats] | None = None,
    power: float = DEFAULT_DEVIATION_POWER,
    scale: CohortScale | None = None,
    blend_share: float = DEFAULT_BLEND,
) -> ComparisonScores:
    """Every genuine and the sampled impostor pairs, raw and normalised (cross: both orders), each
    side's deviation raised to `power` (asnorm.as_norm); with the cohort's own level `scale`, the
    normalised scores are blended with it (asnorm.blend, `blend_share`), as the service does."""
    a, b = comparison_sides(bank, comparison, split.scored)
    stats_a, stats_b = stats if stats is not None else side_stats(bank, comparison, split)
    pairs = split.pairs
    raw, norm, labels, people = [], [], [], []
    for left, right in pair_orders(comparison, pairs):
        scores = rowdot(a, b, left, right)
        raw.append(scores)
        norm.append(
            as_norm(
                scores,
                SideStats(stats_a.mean[left], stats_a.std[left]),
                SideStats(stats_b.mean[right], stats_b.std[right]),
                power,
            )
        )
        labels.append(pairs.genuine)
        people.append(split.scored.identities[left[pairs.genuine]])
    r, n, g = np.concatenate(raw), np.concatenate(norm), np.concatenate(labels)
    plain = ComparisonScores(r[g], r[~g], n[g], n[~g], np.concatenate(people))
    return plain if scale is None else blended_scores(plain, scale, blend_share)


def population_scale(
    bank: MappingBank,
    comparison: Comparison,
    cohort: Population,
    top_k: int = DEFAULT_TOP_K,
    share: float | None = DEFAULT_TOP_K_SHARE,
) -> CohortScale:
    """The cohort's own level in this comparison's space (asnorm.cohort_scale), each photo's person its
    label: the groups a cohort built from a folder of one sub-folder per person records."""
    a, b = comparison_sides(bank, comparison, cohort)
    return cohort_scale(a, b, cohort.identities, cohort.identities, top_k, share)


def blended_scores(scores: ComparisonScores, scale: CohortScale, share: float) -> ComparisonScores:
    """`scores` with their normalised side blended with the cohort's own level (asnorm.blend)."""
    return ComparisonScores(
        scores.raw_genuine,
        scores.raw_impostor,
        blend(scores.raw_genuine, scores.norm_genuine, scale, share),
        blend(scores.raw_impostor, scores.norm_impostor, scale, share),
        scores.genuine_people,
    )


def reached_far(impostor: np.ndarray, threshold: float) -> float:
    return float(np.count_nonzero(impostor >= threshold) / len(impostor))


def tar_at_threshold(genuine: np.ndarray, threshold: float) -> float:
    return float(np.count_nonzero(genuine >= threshold) / len(genuine))


def oracle_cut(impostor: np.ndarray, far: float) -> float:
    """The score a pair must exceed under the best threshold on these impostor scores whose FAR does
    not exceed `far` (an oracle: it is slid on the scored people's own labels); -inf where every
    impostor may pass."""
    allowed = int(np.floor(far * len(impostor)))
    if allowed >= len(impostor):
        return float("-inf")
    return float(np.partition(impostor, len(impostor) - 1 - allowed)[len(impostor) - 1 - allowed])


def tar_at_reached_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """The TAR of the best threshold on these scores whose FAR does not exceed `far` (an oracle)."""
    return float(np.mean(genuine > oracle_cut(impostor, far)))


TAR_GAP_ROUNDS = 2000


def tar_gap_interval(
    accepted: np.ndarray,
    oracle_accepted: np.ndarray,
    people: np.ndarray,
    rounds: int = TAR_GAP_ROUNDS,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of TAR - oracle TAR over the scored people: both thresholds held, the people
    resampled with replacement (a person bootstrap), each taking all of their genuine pairs.

    Why by person: a person's genuine pairs rise and fall together (one hard-to-match face fails many
    of them), so 18,000 genuine pairs of 75 people carry far less evidence than 18,000 independent
    ones, and a gap of a few tenths of a point between two thresholds on the same pairs can be the
    draw of people rather than the score. `accepted` and `oracle_accepted` say which genuine pairs
    each threshold passes; `people` names each pair's person."""
    codes, index = np.unique(people, return_inverse=True)
    gap = np.bincount(index, accepted.astype(np.float64) - oracle_accepted.astype(np.float64), len(codes))
    count = np.bincount(index, None, len(codes))
    rng = np.random.default_rng(seed)
    weights = np.stack(
        [np.bincount(rng.integers(0, len(codes), len(codes)), minlength=len(codes)) for _ in range(rounds)]
    )
    gaps = (weights @ gap) / (weights @ count)
    low, high = np.percentile(gaps, [2.5, 97.5])
    return float(low), float(high)


WIDENING_NOTE = "the interval widened by the largest FAR ratio met on populations left out of the calibration"
POINTS = {"far_1e-2": 1e-2, "far_1e-3": 1e-3, "far_1e-4": 1e-4}


def pooled_calibration(
    scores: Sequence[ComparisonScores], normalized: bool, dataset: str, method: str
) -> Calibration:
    """Thresholds from several populations' scores of one comparison, weighted equally."""
    genuine = [s.norm_genuine if normalized else s.raw_genuine for s in scores]
    impostor = [s.norm_impostor if normalized else s.raw_impostor for s in scores]
    return calibrate_pooled(genuine, impostor, dataset=dataset, method=method)


MIN_FAR_FACTOR = 2.0  # never state a far_range narrower than the [0.5x, 2x] band the study checks


def far_factor(reached: Sequence[tuple[float, int]], nominal: float) -> float:
    """How far reached FARs (rate, impostor pairs) strayed from `nominal`, either way, and at least
    MIN_FAR_FACTOR: the factor a threshold's interval is widened by to state where its FAR may fall on
    another population. Three or four populations are too few to bound that spread on their own (the
    measured factors alone held the reached FAR on 53 of 64 left-out comparisons at 1e-3). A FAR of 0
    counts as one impostor of its pairs (the most that can be said of it)."""
    factor = MIN_FAR_FACTOR
    for rate, impostors in reached:
        floor = max(rate, 1.0 / impostors)
        factor = max(factor, rate / nominal, nominal / floor)
    return factor


def cohort_description(split: PopulationSplit) -> str:
    return (
        f"{len(split.cohort)} photos of the other half of the people (unlabelled), the scored half's "
        f"pairs normalised against it"
    )


def calibration_entry(
    bank: MappingBank,
    comparison: Comparison,
    raw: Calibration | None,
    normalized: Calibration | None,
) -> CalibrationEntry:
    """An entry pinned to the weights (and map tensors) the scores were made with."""
    plan = (
        both_maps_plan(bank, comparison.source, comparison.target)
        if comparison.both_maps
        else plan_comparison(bank, comparison.source, comparison.target, comparison.target)
    )
    if plan is None:
        raise ValueError(f"{comparison.label}: no direct maps both ways")
    key = comparison_key(plan)
    if key is None:
        raise ValueError(f"{comparison.label}: a chain of maps has no calibration entry")
    return CalibrationEntry(comparison=key, pins=comparison_pins(bank, plan), raw=raw, normalized=normalized)


def calibration_set(
    bank: MappingBank,
    splits: Sequence[PopulationSplit],
    scores: dict[tuple[Comparison, str], ComparisonScores],
    kind: SetKind,
    top_k: int,
    top_k_share: float | None,
    factors: dict[Comparison, dict[str, float]] | None = None,
    include_raw: bool = False,
    note: str | None = None,
    deviation_power: float = DEFAULT_DEVIATION_POWER,
    blend_share: float = 1.0,
) -> CalibrationSet:
    """A calibration set from the scored halves of `splits` (equal weights), normalised thresholds
    always, raw ones with `include_raw`; `factors` widen each threshold's interval into its far_range.
    `deviation_power` and `blend_share` are recorded as the ones `scores` were normalised with
    (comparison_scores, blended_scores)."""
    names = "+".join(s.name for s in splits)
    entries = {}
    for comparison in sorted(
        {c for c, _ in scores}, key=lambda c: (not c.native, c.both_maps, c.source, c.target)
    ):
        per_population = [scores[(comparison, s.name)] for s in splits]
        what = "same-space pairs" if comparison.native else "mapped source vs native target, both orders"
        if comparison.both_maps:
            what = "pairs compared in both spaces through both maps, both orders"
        normalized = pooled_calibration(per_population, True, names, f"AS-norm scores of {what}")
        # a comparison through both maps has no map file to take raw thresholds from: always written
        raw = (
            pooled_calibration(per_population, False, names, f"raw cosine of {what}")
            if include_raw or comparison.both_maps
            else None
        )
        if factors is not None and comparison in factors:
            note_text = WIDENING_NOTE
            normalized = widen_for_population(normalized, factors[comparison], note_text)
        entry = calibration_entry(bank, comparison, raw, normalized)
        entries[entry.comparison] = entry
    populations = [
        PopulationInfo(
            name=s.name,
            images=len(s.scored),
            identities=len(np.unique(s.scored.identities)),
            cohort=cohort_description(s),
        )
        for s in splits
    ]
    return CalibrationSet(
        kind=kind,
        populations=populations,
        normalization=NormalizationInfo(
            top_k=top_k,
            top_k_share=top_k_share,
            deviation_power=deviation_power,
            blend=None if blend_share == 1.0 else blend_share,
        ),
        entries=entries,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        note=note,
    )
