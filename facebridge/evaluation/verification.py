"""Verification pairs and their scores: every genuine pair and a seeded sample of impostor pairs,
scored in blocks, with the balanced accuracy and TAR at FAR that every study and `facebridge fit`
report. Numpy only, so that fitting from arrays needs no vision stack.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from facebridge.cohort.asnorm import DEFAULT_BLEND, CohortScale, SideStats, normalized_scores, select

DEFAULT_IMPOSTORS = 2_000_000
GRID = np.linspace(-1.0, 1.0, 8001)  # candidate thresholds for accuracy (step 2.5e-4)


@dataclass(frozen=True)
class PairSample:
    """Photo pairs (i < j) of a population: every genuine pair and a seeded sample of impostor pairs."""

    left: np.ndarray
    right: np.ndarray
    genuine: np.ndarray  # bool

    @property
    def genuine_pairs(self) -> int:
        return int(self.genuine.sum())

    @property
    def impostor_pairs(self) -> int:
        return int((~self.genuine).sum())


def verification_pairs(
    identities: np.ndarray, max_impostors: int = DEFAULT_IMPOSTORS, seed: int = 0
) -> PairSample:
    """All same-identity pairs; impostor pairs all (if fewer than `max_impostors`) or a uniform
    sample without replacement of that many distinct unordered pairs."""
    n = len(identities)
    _, label = np.unique(identities, return_inverse=True)
    order = np.argsort(label, kind="stable")
    starts = np.r_[0, np.nonzero(np.diff(label[order]))[0] + 1, n]
    gl, gr = [], []
    for a, b in itertools.pairwise(starts):
        members = np.sort(order[a:b])
        i, j = np.triu_indices(len(members), 1)
        gl.append(members[i])
        gr.append(members[j])
    g_left, g_right = np.concatenate(gl), np.concatenate(gr)
    total_impostors = n * (n - 1) // 2 - len(g_left)
    rng = np.random.default_rng(seed)
    if total_impostors <= max_impostors:
        i, j = np.triu_indices(n, 1)
        keep = label[i] != label[j]
        i_left, i_right = i[keep], j[keep]
    else:
        chosen = np.empty(0, np.int64)
        while len(chosen) < max_impostors:
            need = int((max_impostors - len(chosen)) * 1.5) + 1000
            a, b = rng.integers(0, n, need), rng.integers(0, n, need)
            keep = label[a] != label[b]
            lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
            merged = np.sort(np.r_[chosen, lo.astype(np.int64) * n + hi])
            chosen = merged[np.r_[True, merged[1:] != merged[:-1]]]  # sort-based unique: fast for int64
        chosen = rng.permutation(chosen)[:max_impostors]
        i_left, i_right = chosen // n, chosen % n
    return PairSample(
        np.r_[g_left, i_left].astype(np.int64),
        np.r_[g_right, i_right].astype(np.int64),
        np.r_[np.ones(len(g_left), bool), np.zeros(len(i_left), bool)],
    )


def rowdot(
    a: np.ndarray, b: np.ndarray, left: np.ndarray, right: np.ndarray, block: int = 1024
) -> np.ndarray:
    """`a[left[k]] . b[right[k]]` for every k, as blocks of a Gram matrix (one BLAS product per block
    of left rows, then a scalar gather) instead of gathering millions of embedding rows."""
    out = np.empty(len(left), np.float32)
    order = np.argsort(left, kind="stable")
    sorted_left = left[order]
    bounds = np.searchsorted(sorted_left, np.arange(0, len(a) + block, block))
    bt = np.ascontiguousarray(b.T)
    for k, start in enumerate(range(0, len(a), block)):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        gram = a[start : start + block] @ bt
        picked = order[lo:hi]
        out[picked] = gram[sorted_left[lo:hi] - start, right[picked]]
    return out


def pair_scores(a: np.ndarray, b: np.ndarray, pairs: PairSample) -> tuple[np.ndarray, np.ndarray]:
    """(scores, genuine labels) of `a[i] . b[j]`; when `a` and `b` are different spaces or maps the
    comparison is asymmetric, so both orders are scored: `a[i] . b[j]` and `a[j] . b[i]`."""
    if a is b:
        return rowdot(a, b, pairs.left, pairs.right), pairs.genuine
    scores = np.r_[rowdot(a, b, pairs.left, pairs.right), rowdot(a, b, pairs.right, pairs.left)]
    return scores, np.r_[pairs.genuine, pairs.genuine]


def normalised_pair_scores(
    a: np.ndarray,
    b: np.ndarray,
    pairs: PairSample,
    stats_a: SideStats,
    stats_b: SideStats,
    level: CohortScale | None = None,
    share: float = DEFAULT_BLEND,
) -> tuple[np.ndarray, np.ndarray]:
    """`pair_scores`, each score AS-normalised by its two sides' cohort statistics (`stats_a` of the
    rows of `a`, `stats_b` of the rows of `b`), and blended with the cohort's own `level` where one is
    given (asnorm.blend), as /verify normalises one pair."""
    orders = [(pairs.left, pairs.right)] if a is b else [(pairs.left, pairs.right), (pairs.right, pairs.left)]
    scores = []
    for left, right in orders:
        raw = rowdot(a, b, left, right)
        scores.append(normalized_scores(raw, select(stats_a, left), select(stats_b, right), level, share))
    return np.concatenate(scores), np.concatenate([pairs.genuine] * len(orders))


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, folds: int = 10, seed: int = 0) -> float:
    """Mean of TAR and TRR, the threshold chosen on the other folds (pairs split at random into
    `folds`); with all genuine pairs and many more impostors, the LFW-style accuracy of a balanced set.

    Thresholds are tried on GRID, cosine's range; scores outside it (normalised ones, in deviations)
    are tried on as fine a grid over their own range."""
    grid = GRID
    if len(scores) and (scores.min() < GRID[0] - 1e-3 or scores.max() > GRID[-1] + 1e-3):
        grid = np.linspace(float(scores.min()), float(scores.max()), len(GRID))
    fold = np.random.default_rng(seed).permutation(np.arange(len(scores)) % folds)
    below_genuine = np.zeros((folds, len(grid)), np.int64)  # genuine pairs below each threshold
    below_impostor = np.zeros((folds, len(grid)), np.int64)
    n_genuine = np.zeros(folds, np.int64)
    n_impostor = np.zeros(folds, np.int64)
    for f in range(folds):
        s, lab = scores[fold == f], labels[fold == f]
        below_genuine[f] = np.searchsorted(np.sort(s[lab]), grid, side="left")
        below_impostor[f] = np.searchsorted(np.sort(s[~lab]), grid, side="left")
        n_genuine[f], n_impostor[f] = int(lab.sum()), int((~lab).sum())
    accuracies = []
    for f in range(folds):
        g = below_genuine.sum(axis=0) - below_genuine[f]
        i = below_impostor.sum(axis=0) - below_impostor[f]
        ng, ni = n_genuine.sum() - n_genuine[f], n_impostor.sum() - n_impostor[f]
        value = (ng - g) / ng + i / ni
        ties = np.flatnonzero(value == value.max())
        best = int(ties[len(ties) // 2])  # the middle of the best range, not its edge
        tar = (n_genuine[f] - below_genuine[f, best]) / n_genuine[f]
        accuracies.append(0.5 * (tar + below_impostor[f, best] / n_impostor[f]))
    return float(np.mean(accuracies))


def tar_at(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """Best TAR whose FAR (impostors accepted at score >= t) does not exceed `far`: the threshold sits
    just above the (k+1)-th highest impostor score, k = floor(far * impostors). One partition, no sort,
    so it is cheap on millions of pairs (same value as metrics.tar_at_far)."""
    allowed = int(np.floor(far * len(impostor)))
    if allowed >= len(impostor):
        return 1.0
    kth = np.partition(impostor, len(impostor) - 1 - allowed)[len(impostor) - 1 - allowed]
    return float(np.mean(genuine > kth))
