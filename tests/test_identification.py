"""Open-set identification metrics against hand-computed answers (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from facebridge.cohort.asnorm import CohortScale, SideStats, top_k_stats
from facebridge.evaluation.identification import identify, open_set_split

pytestmark = pytest.mark.fast


def test_split_enrolls_half_the_people_with_one_photo_each() -> None:
    identities = np.repeat(np.array([f"p{i}" for i in range(10)]), 3)
    split = open_set_split(identities, seed=1)
    enrolled = set(identities[split.gallery].tolist())
    assert len(split.gallery) == 5 and len(enrolled) == 5
    assert set(identities[split.mated].tolist()) == enrolled and len(split.mated) == 10
    assert not set(identities[split.non_mated].tolist()) & enrolled and len(split.non_mated) == 15


def test_identify_counts_hits_misses_and_the_fpir_threshold() -> None:
    rng = np.random.default_rng(0)
    people = 40
    centres = rng.normal(size=(people, 64))
    identities = np.repeat(np.arange(people).astype(str), 3)
    noise = np.where(np.repeat(np.arange(people), 3)[:, None] < 30, 0.05, 3.0)  # 10 people hard to find
    rows = np.repeat(centres, 3, axis=0) + noise * rng.normal(size=(len(identities), 64))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    split = open_set_split(identities, seed=0)
    result = identify(rows[split.gallery], rows, split, identities, fpir=0.1)
    best = rows[split.mated] @ rows[split.gallery].T
    hits = identities[split.gallery][best.argmax(axis=1)] == identities[split.mated]
    assert result.rank1 == pytest.approx(hits.mean())
    non_mated_best = (rows[split.non_mated] @ rows[split.gallery].T).max(axis=1)
    assert result.fpir == pytest.approx(np.mean(non_mated_best >= result.threshold)) and result.fpir <= 0.1
    found = hits & (best.max(axis=1) >= result.threshold)
    assert result.fnir == pytest.approx(1 - found.mean())
    assert 0 < result.fnir < 1 and 0.5 < result.rank1 < 1


@pytest.mark.parametrize("level", [None, CohortScale(0.3, 0.05)], ids=["as-norm", "blended"])
def test_normalised_search_scores_each_pair_as_verify_normalises_it(level: CohortScale | None) -> None:
    rng = np.random.default_rng(3)
    people = 30
    identities = np.repeat(np.arange(people).astype(str), 3)
    rows = np.repeat(rng.normal(size=(people, 32)), 3, axis=0) + 0.8 * rng.normal(size=(3 * people, 32))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    cohort = rng.normal(size=(200, 32))
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    split = open_set_split(identities, seed=0)
    stats = top_k_stats(rows, cohort, top_k=20)
    gallery_stats = SideStats(stats.mean[split.gallery], stats.std[split.gallery])
    normalization = (gallery_stats, stats)
    result = identify(
        rows[split.gallery],
        rows,
        split,
        identities,
        fpir=0.1,
        normalization=normalization,
        level=level,
        share=0.75,
    )

    def normalised(searches: np.ndarray) -> np.ndarray:
        raw = rows[searches] @ rows[split.gallery].T
        as_norm = 0.5 * (
            (raw - stats.mean[searches, None]) / stats.std[searches, None]
            + (raw - gallery_stats.mean[None, :]) / gallery_stats.std[None, :]
        )
        return as_norm if level is None else 0.75 * as_norm + 0.25 * (raw - level.mean) / level.std

    mated, non_mated = normalised(split.mated), normalised(split.non_mated)
    hits = identities[split.gallery][mated.argmax(axis=1)] == identities[split.mated]
    assert result.rank1 == pytest.approx(hits.mean())
    assert result.fpir == pytest.approx(np.mean(non_mated.max(axis=1) >= result.threshold))
    assert result.fnir == pytest.approx(1 - np.mean(hits & (mated.max(axis=1) >= result.threshold)))
    assert result.threshold > 1.0  # in deviations, not cosine
    plain = identify(rows[split.gallery], rows, split, identities, fpir=0.1, normalization=normalization)
    assert (result.threshold == plain.threshold) == (level is None)


def test_a_custom_scoring_decides_every_search_of_a_mixed_gallery() -> None:
    """A gallery of two kinds of entry, each shifted by its own offset (a threshold per kind): rank-1,
    FPIR and FNIR follow the shifted scores, as a direct computation of them says."""
    rng = np.random.default_rng(5)
    people = 30
    identities = np.repeat(np.arange(people).astype(str), 3)
    rows = np.repeat(rng.normal(size=(people, 32)), 3, axis=0) + 0.8 * rng.normal(size=(3 * people, 32))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    split = open_set_split(identities, seed=0)
    offsets = np.where(np.arange(len(split.gallery)) % 2 == 0, 0.2, -0.1).astype(np.float32)
    seen: list[np.ndarray] = []

    def shifted(raw: np.ndarray, chunk: np.ndarray) -> np.ndarray:
        seen.append(chunk)
        return raw - offsets[None, :]

    result = identify(rows[split.gallery], rows, split, identities, fpir=0.1, scoring=shifted)
    mated = rows[split.mated] @ rows[split.gallery].T - offsets[None, :]
    non_mated = rows[split.non_mated] @ rows[split.gallery].T - offsets[None, :]
    hits = identities[split.gallery][mated.argmax(axis=1)] == identities[split.mated]
    plain = identify(rows[split.gallery], rows, split, identities, fpir=0.1)
    assert result.rank1 == pytest.approx(hits.mean()) and result.rank1 != plain.rank1
    assert result.fpir == pytest.approx(np.mean(non_mated.max(axis=1) >= result.threshold))
    assert result.fnir == pytest.approx(1 - np.mean(hits & (mated.max(axis=1) >= result.threshold)))
    assert sorted(np.concatenate(seen).tolist()) == sorted([*split.mated, *split.non_mated])
