"""Pair scores AS-normalised for studies, against a direct computation (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from facebridge.cohort.asnorm import CohortScale, top_k_stats
from facebridge.evaluation.verification import balanced_accuracy, normalised_pair_scores, verification_pairs
from tests.factories import unit_rows

pytestmark = pytest.mark.fast


def test_each_score_is_normalised_by_its_own_two_sides_in_both_orders() -> None:
    rng = np.random.default_rng(0)
    identities = np.repeat(np.arange(12).astype(str), 3)
    a, b = unit_rows(36, 24, rng, np.float64), unit_rows(36, 24, rng, np.float64)
    stats_a, stats_b = (
        top_k_stats(a, unit_rows(80, 24, rng, np.float64), 10),
        top_k_stats(b, unit_rows(80, 24, rng, np.float64), 10),
    )
    pairs = verification_pairs(identities, 200, 0)
    scores, labels = normalised_pair_scores(a, b, pairs, stats_a, stats_b)
    expected = []
    for left, right in ((pairs.left, pairs.right), (pairs.right, pairs.left)):
        for i, j in zip(left.tolist(), right.tolist(), strict=True):
            s = float(a[i] @ b[j])
            expected.append(
                0.5 * ((s - stats_a.mean[i]) / stats_a.std[i] + (s - stats_b.mean[j]) / stats_b.std[j])
            )
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, np.r_[pairs.genuine, pairs.genuine])
    same, same_labels = normalised_pair_scores(a, a, pairs, stats_a, stats_a)
    assert len(same) == len(pairs.left) and same_labels.sum() == pairs.genuine.sum()  # one order


def test_a_blended_score_mixes_as_norm_with_the_cohorts_own_level() -> None:
    rng = np.random.default_rng(2)
    identities = np.repeat(np.arange(10).astype(str), 3)
    a, b = unit_rows(30, 16, rng), unit_rows(30, 16, rng)
    stats_a, stats_b = top_k_stats(a, unit_rows(60, 16, rng), 10), top_k_stats(b, unit_rows(60, 16, rng), 10)
    pairs = verification_pairs(identities, 100, 0)
    level = CohortScale(0.2, 0.08)
    plain, _ = normalised_pair_scores(a, b, pairs, stats_a, stats_b)
    blended, labels = normalised_pair_scores(a, b, pairs, stats_a, stats_b, level, share=0.6)
    raw = np.r_[
        np.sum(a[pairs.left] * b[pairs.right], axis=1), np.sum(a[pairs.right] * b[pairs.left], axis=1)
    ]
    np.testing.assert_allclose(blended, 0.6 * plain + 0.4 * (raw - 0.2) / 0.08, rtol=1e-4, atol=1e-4)
    assert len(labels) == len(blended)


def test_accuracy_of_scores_beyond_cosine_range_uses_their_own_range() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(500, bool), np.zeros(5000, bool)]
    separable = np.r_[rng.uniform(4.0, 20.0, 500), rng.uniform(-5.0, 3.0, 5000)]
    assert balanced_accuracy(separable, labels) == 1.0
    assert balanced_accuracy(separable / 20.0, labels) == 1.0  # the same ranking within [-1, 1]
    noise = rng.uniform(-8, 8, len(labels))
    assert abs(balanced_accuracy(noise, labels) - 0.5) < 0.05
