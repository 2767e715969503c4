"""Labelling mistakes that every model agrees on, found before a population is scored.

Identity datasets gathered from the web hold the same person under two identity numbers: celeba-dev's
id_7392 and id_7393 are one actress. Every photo pair across the two folders then counts as an
impostor pair that all models accept, which puts a floor under the measured FAR that no threshold can
go below (5.6e-4 in a draw of the threshold study that scores both folders, where 1e-4 is promised)
and charges a threshold for a dataset's mistake.

The audit merges two identities when most of the photo pairs between them score above a strict
threshold in *every* model at once. Two different people who look alike pass one model's threshold
on a few of their pairs; they do not pass four independent models' on most of them. Both folders
must hold at least `MIN_PHOTOS` photos, so that "most pairs" is evidence about two people and not about
one photo: LFW's twins (the Olsens, the Mowrys: one to three photos each) stay as labelled. Single
mislabelled photos are left alone: telling them from hard impostors would need the scores the audit
is meant not to bias. Every merge is reported with its evidence, so a reader can check the photos.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from facebridge.evaluation.population import Population
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.compare import plan_comparison

DEFAULT_SHARE = 0.5  # of the photo pairs between two identities that every model must accept
MIN_PHOTOS = 5  # in each of the two folders
AUDIT_POINT = "far_1e-4"  # each model's shipped raw threshold at this FAR is its strict bar
BLOCK_ROWS = 2048  # rows of the score matrix held at once (LFW: 13k x 13k would be 700 MB per model)


@dataclass(frozen=True)
class IdentityMerge:
    """Two identity labels of one person, and the evidence: photo pairs between them, and how many
    every model scored above its strict threshold."""

    kept: str
    merged: str
    photo_pairs: int
    agreeing_pairs: int

    @property
    def share(self) -> float:
        return self.agreeing_pairs / self.photo_pairs


def duplicate_identities(
    population: Population,
    thresholds: Mapping[str, float],
    share: float = DEFAULT_SHARE,
    min_photos: int = MIN_PHOTOS,
) -> list[IdentityMerge]:
    """Identity pairs of `population`, each with at least `min_photos` photos, at least `share` of
    whose photo pairs score at or above `thresholds[model]` in every model of `thresholds` (cosine of
    unit templates)."""
    models = list(thresholds)
    identities = population.identities
    names, codes = np.unique(identities, return_inverse=True)
    counts = np.bincount(codes, minlength=len(names))
    agreeing: dict[tuple[int, int], int] = {}
    n = len(identities)
    for start in range(0, n, BLOCK_ROWS):
        rows = slice(start, min(start + BLOCK_ROWS, n))
        accepted = np.ones((rows.stop - rows.start, n), bool)
        for model in models:
            templates = population.clean[model]
            accepted &= templates[rows] @ templates.T >= thresholds[model]
        left, right = np.nonzero(accepted)
        left += start
        keep = (left < right) & (codes[left] != codes[right])
        a, b = codes[left[keep]], codes[right[keep]]
        pair_ids, pair_counts = np.unique(
            np.stack([np.minimum(a, b), np.maximum(a, b)]), axis=1, return_counts=True
        )
        for (i, j), count in zip(pair_ids.T.tolist(), pair_counts.tolist(), strict=True):
            agreeing[(i, j)] = agreeing.get((i, j), 0) + count
    merges = []
    for (i, j), count in sorted(agreeing.items()):
        photo_pairs = int(counts[i] * counts[j])
        if min(counts[i], counts[j]) >= min_photos and count >= share * photo_pairs:
            merges.append(IdentityMerge(str(names[i]), str(names[j]), photo_pairs, count))
    return merges


def merge_identities(population: Population, merges: list[IdentityMerge]) -> Population:
    """`population` with each merge's second label replaced by the label it joins (chains followed,
    so three labels of one person become one)."""
    target = {m.merged: m.kept for m in merges}

    def root(label: str) -> str:
        while label in target:
            label = target[label]
        return label

    return replace(population, identities=np.array([root(str(label)) for label in population.identities]))


def native_thresholds(bank: MappingBank, models: Sequence[str], point: str = AUDIT_POINT) -> dict[str, float]:
    """Each model's shipped raw threshold at `point` in its own space: the strict bar of the audit."""
    thresholds = {}
    for model in models:
        calibration = plan_comparison(bank, model, model, model).calibration
        if calibration is None:
            raise ValueError(f"{model} has no shipped calibration to audit labels with")
        thresholds[model] = calibration.thresholds[point].threshold
    return thresholds


def audited(
    population: Population, thresholds: Mapping[str, float]
) -> tuple[Population, list[IdentityMerge]]:
    """`population` with the identities every model says are one person merged, and the merges."""
    merges = duplicate_identities(population, thresholds)
    return merge_identities(population, merges), merges
