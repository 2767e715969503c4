"""A deployment's own calibration: thresholds measured on its own labelled people.

From a folder of photos (one sub-folder per person, embedded by every model) or from the pair store's
subjects (each recorded capture embedded by two models), half of the people are scored and photos of
the other half form the cohort, the protocol under which the shipped normalised thresholds were shown
to transfer (docs/thresholds.md). Every same-space, direct-map and both-maps comparison between the
models at hand gets raw and AS-norm thresholds; the set overrides the shipped one where it has an entry.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facebridge.cohort.asnorm import DEFAULT_BLEND, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE
from facebridge.cohort.calibration_set import CalibrationEntry, CalibrationSet
from facebridge.evaluation.population import Population
from facebridge.evaluation.thresholds import (
    DEFAULT_MAX_COHORT,
    Comparison,
    calibration_set,
    comparison_scores,
    comparisons,
    population_scale,
    side_stats,
    split_population,
)
from facebridge.linalg import l2_normalize
from facebridge.mapping.bank import MappingBank
from facebridge.pairs.rows import PairSet

MIN_PEOPLE = 10  # half of them scored: fewer give too few impostor pairs for any FAR worth stating


def comparisons_between(bank: MappingBank, models: Sequence[str]) -> list[Comparison]:
    """Each model's own space, each direct map between two of `models` that the bank serves, and each
    pair of them with direct maps both ways (compared through both maps)."""

    def served(c: Comparison) -> bool:
        one_way = (c.source, c.target) in bank.maps
        return c.native or (one_way and (not c.both_maps or (c.target, c.source) in bank.maps))

    return [c for c in comparisons(models, both_maps=True) if served(c)]


def calibrate_population(
    bank: MappingBank,
    population: Population,
    models: Sequence[str],
    top_k: int = DEFAULT_TOP_K,
    top_k_share: float | None = DEFAULT_TOP_K_SHARE,
    max_cohort: int = DEFAULT_MAX_COHORT,
    seed: int = 0,
    note: str | None = None,
) -> CalibrationSet:
    """The deployment calibration set of `population` (unit embeddings per model, rows aligned)."""
    people = len(np.unique(population.identities))
    if people < MIN_PEOPLE:
        raise ValueError(f"{population.name}: {people} people; a calibration needs at least {MIN_PEOPLE}")
    split = split_population(population, seed, max_cohort)
    if split.pairs.genuine_pairs == 0:
        raise ValueError(f"{population.name}: no person of the scored half has two photos")
    scores = {}
    for comparison in comparisons_between(bank, models):
        stats = side_stats(bank, comparison, split, top_k=top_k, share=top_k_share)
        scale = population_scale(bank, comparison, split.cohort, top_k, top_k_share)
        scores[(comparison, population.name)] = comparison_scores(
            bank, comparison, split, stats, scale=scale, blend_share=DEFAULT_BLEND
        )
    return calibration_set(
        bank,
        [split],
        scores,
        "deployment",
        top_k,
        top_k_share,
        include_raw=True,
        note=note,
        blend_share=DEFAULT_BLEND,
    )


def population_from_pairs(pairs: PairSet, name: str = "pair-store") -> Population:
    """The pair store's captures of two models as a population: subjects are the identities."""
    if len(pairs) == 0:
        raise ValueError(f"no recorded pairs of {pairs.source_model} and {pairs.target_model}")
    clean = {
        pairs.source_model: l2_normalize(pairs.source.astype(np.float64)).astype(np.float32),
        pairs.target_model: l2_normalize(pairs.target.astype(np.float64)).astype(np.float32),
    }
    paths = np.array([f"{s}/{i}" for i, s in enumerate(pairs.subjects)])
    return Population(name, paths, pairs.subjects.astype(str), clean)


def merge_sets(sets: Sequence[CalibrationSet]) -> CalibrationSet:
    """One set from several (e.g. one per model pair of the pair store); a comparison measured twice
    keeps the measurement with more impostor pairs. Normalised thresholds hold only for scores
    normalised as they were calibrated: the last set's normalisation is the merged set's, and a set
    normalised otherwise (e.g. written before the blend was recorded) keeps only its raw thresholds."""
    if not sets:
        raise ValueError("nothing to merge")
    normalization = sets[-1].normalization
    entries: dict[str, CalibrationEntry] = {}
    for found in sets:
        for key, entry in found.entries.items():
            if found.normalization != normalization and entry.normalized is not None:
                if entry.raw is None:
                    continue
                entry = entry.model_copy(update={"normalized": None})
            known = entries.get(key)
            pairs = entry.raw.impostor_pairs if entry.raw is not None else 0
            if known is None or (known.raw is not None and known.raw.impostor_pairs < pairs):
                entries[key] = entry
    populations = [p for found in sets for p in found.populations]
    return sets[0].model_copy(
        update={"entries": entries, "populations": populations, "normalization": normalization}
    )
