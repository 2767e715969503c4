"""The LFW protocol and metrics agree with straightforward, independent computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facebridge.evaluation.lfw import pair_images, read_pairs
from facebridge.evaluation.metrics import auc, best_threshold, eer, tar_at_far, ten_fold_accuracy


def test_read_official_pairs(lfw: Path) -> None:
    pairs = read_pairs(lfw / "pairs.txt")
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    assert {p.fold for p in pairs} == set(range(10))
    assert (
        pairs[0].left == "Abel_Pacheco/Abel_Pacheco_0001.jpg"
        and pairs[0].right == "Abel_Pacheco/Abel_Pacheco_0004.jpg"
    )
    assert all((lfw / p).is_file() for p in pair_images(pairs)[:200])
    # identities do not repeat across folds
    people = [{p.left.split("/")[0] for p in pairs if p.fold == f} for f in range(10)]
    assert all(not (people[a] & people[b]) for a in range(10) for b in range(a + 1, 10))


@pytest.fixture
def synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    labels = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    scores = np.where(labels, rng.normal(0.6, 0.15, labels.size), rng.normal(0.1, 0.15, labels.size))
    folds = np.repeat(np.arange(10), 60)
    return scores, labels, folds


def test_best_threshold_is_the_brute_force_optimum(synthetic: tuple) -> None:
    scores, labels, _ = synthetic
    threshold = best_threshold(scores, labels)
    brute = max(np.mean((scores >= t) == labels) for t in np.r_[scores, scores.max() + 1])
    assert np.mean((scores >= threshold) == labels) == pytest.approx(brute)


def test_ten_fold_matches_a_plain_loop(synthetic: tuple) -> None:
    scores, labels, folds = synthetic
    result = ten_fold_accuracy(scores, labels, folds)
    expected = []
    for fold in range(10):
        train = folds != fold
        candidates = np.sort(scores[train])
        accs = [np.mean((scores[train] >= t) == labels[train]) for t in candidates]
        best = max(accs)
        # any threshold in the optimal interval gives the same training accuracy; test accuracy can differ
        # only at ties, so compare with the first optimal candidate's interval midpoint
        t = candidates[int(np.argmax(accs))]
        below = candidates[candidates < t]
        t_mid = (below.max() + t) / 2 if below.size else t - 1e-6
        assert np.mean((scores[train] >= t_mid) == labels[train]) == pytest.approx(best)
        expected.append(np.mean((scores[folds == fold] >= t_mid) == labels[folds == fold]))
    np.testing.assert_allclose(result.fold_accuracies, expected)


def test_auc_is_the_pairwise_probability(synthetic: tuple) -> None:
    scores, labels, _ = synthetic
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        pos.size * neg.size
    )
    assert auc(scores, labels) == pytest.approx(pairwise, abs=1e-12)


def test_eer_and_tar_at_far(synthetic: tuple) -> None:
    scores, labels, _ = synthetic
    pos, neg = scores[labels], scores[~labels]
    rates = [(np.mean(neg >= t), np.mean(pos < t)) for t in np.sort(scores)]
    gap = min(abs(far - frr) for far, frr in rates)
    closest = next((far + frr) / 2 for far, frr in rates if abs(far - frr) == gap)
    assert eer(scores, labels) == pytest.approx(closest, abs=2.0 / neg.size)
    for target in (0.0, 0.01, 0.1):
        tars = [np.mean(pos >= t) for t in np.r_[scores, np.inf] if np.mean(neg >= t) <= target]
        assert tar_at_far(scores, labels, target) == pytest.approx(max(tars))


def test_perfect_separation() -> None:
    scores = np.array([0.9, 0.8, 0.2, 0.1])
    labels = np.array([True, True, False, False])
    assert (
        auc(scores, labels) == 1.0 and eer(scores, labels) == 0.0 and tar_at_far(scores, labels, 0.0) == 1.0
    )
