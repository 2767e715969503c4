"""How interchangeable two embedding spaces are, measured on LFW with fold-aware maps.

For every LFW fold the maps (A→B and, separately, B→A) are fitted only on photos of people who do not
appear in that fold, then the fold's pairs are scored natively, mapped-to-mapped (both photos through
the map) and cross (mapped A photo against the native B photo). Accuracy follows the 10-fold protocol
on the 6,000 listed pairs; TAR at low FAR uses every genuine and impostor pair among each fold's test
photos (all-vs-all), because 300 impostor pairs per fold cannot measure a FAR of 1e-4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from facebridge.evaluation.lfw import Pair
from facebridge.evaluation.metrics import auc, eer, tar_at_far, ten_fold_accuracy
from facebridge.linalg import l2_normalize

if TYPE_CHECKING:  # the study itself needs no model runtime: caches are read, not built
    from facebridge.embedding_cache import EmbeddingCache

PAIRINGS = ("same-image", "centroid")


class FittedTransform(Protocol):
    def transform(self, x: np.ndarray) -> np.ndarray: ...


# (source rows, target rows, identities) -> a fitted map
Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray], FittedTransform]


@dataclass
class PairedLfw:
    """Two models' unit embeddings of the same LFW photos, with the pairs and folds of pairs.txt."""

    source: str
    target: str
    a: np.ndarray  # (n, dim_a)
    b: np.ndarray  # (n, dim_b)
    identities: np.ndarray  # (n,) str
    row_fold: np.ndarray  # (n,) fold whose pairs use this identity; -1 when no pair does
    left: np.ndarray  # (pairs,) row of each pair's left photo
    right: np.ndarray
    labels: np.ndarray  # (pairs,) bool
    folds: np.ndarray  # (pairs,) int

    @property
    def fold_ids(self) -> list[int]:
        return [int(f) for f in np.unique(self.folds)]

    def fit_rows(self, fold: int) -> np.ndarray:
        """Photos whose identity is not tested in `fold`."""
        return self.row_fold != fold

    def test_rows(self, fold: int) -> np.ndarray:
        return self.row_fold == fold

    def swapped(self) -> PairedLfw:
        return PairedLfw(
            self.target,
            self.source,
            self.b,
            self.a,
            self.identities,
            self.row_fold,
            self.left,
            self.right,
            self.labels,
            self.folds,
        )


def paired_lfw(source: EmbeddingCache, target: EmbeddingCache, pairs: list[Pair]) -> PairedLfw:
    """Rows of photos embedded by both models; every photo a pair uses must be there."""
    source_index, target_index = source.index(), target.index()
    paths = sorted(p for p in source_index if p in target_index)
    row = {p: i for i, p in enumerate(paths)}
    missing = {p.left for p in pairs if p.left not in row} | {p.right for p in pairs if p.right not in row}
    if missing:
        raise ValueError(f"{len(missing)} pair photos are missing from the caches, e.g. {sorted(missing)[0]}")
    identities = np.array([p.split("/", 1)[0] for p in paths])
    fold_of: dict[str, int] = {}
    for pair in pairs:
        for path in (pair.left, pair.right):
            name = path.split("/", 1)[0]
            if fold_of.setdefault(name, pair.fold) != pair.fold:
                raise ValueError(f"identity {name} appears in folds {fold_of[name]} and {pair.fold}")
    return PairedLfw(
        str(source.meta["model"]),
        str(target.meta["model"]),
        l2_normalize(source.embeddings[[source_index[p] for p in paths]].astype(np.float64)),
        l2_normalize(target.embeddings[[target_index[p] for p in paths]].astype(np.float64)),
        identities,
        np.array([fold_of.get(name, -1) for name in identities]),
        np.array([row[p.left] for p in pairs]),
        np.array([row[p.right] for p in pairs]),
        np.array([p.same for p in pairs]),
        np.array([p.fold for p in pairs]),
    )


def centroid_targets(y: np.ndarray, identities: np.ndarray) -> np.ndarray:
    """Each row's target replaced by its identity's mean target embedding (unit length)."""
    _, inverse = np.unique(identities, return_inverse=True)
    sums = np.zeros((inverse.max() + 1, y.shape[1]))
    np.add.at(sums, inverse, y)
    return l2_normalize(sums)[inverse]


def cosine_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", l2_normalize(x), l2_normalize(y))


@dataclass
class Scores:
    """Scores of the listed pairs, plus all-vs-all genuine and impostor scores of the test photos."""

    pairs: np.ndarray
    genuine: list[np.ndarray] = field(default_factory=list)
    impostor: list[np.ndarray] = field(default_factory=list)

    def add_all_vs_all(self, matrix: np.ndarray, identities: np.ndarray, symmetric: bool) -> None:
        same = identities[:, None] == identities[None, :]
        keep = np.triu(np.ones_like(same), 1) if symmetric else ~np.eye(len(identities), dtype=bool)
        self.genuine.append(matrix[same & keep].astype(np.float32))
        self.impostor.append(matrix[~same & keep].astype(np.float32))


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    accuracy_std: float
    auc: float
    eer: float
    tar_far_1e3: float
    tar_far_1e4: float
    impostor_pairs: int


def summarise(scores: Scores, labels: np.ndarray, folds: np.ndarray) -> Metrics:
    ten_fold = ten_fold_accuracy(scores.pairs, labels, folds)
    genuine, impostor = np.concatenate(scores.genuine), np.concatenate(scores.impostor)
    all_scores = np.r_[genuine, impostor]
    all_labels = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    return Metrics(
        ten_fold.mean,
        ten_fold.std,
        auc(scores.pairs, labels),
        eer(scores.pairs, labels),
        tar_at_far(all_scores, all_labels, 1e-3),
        tar_at_far(all_scores, all_labels, 1e-4),
        len(impostor),
    )


def native_scores(x: np.ndarray, data: PairedLfw, all_vs_all: bool = True) -> Scores:
    scores = Scores(cosine_rows(x[data.left], x[data.right]))
    if all_vs_all:
        for fold in data.fold_ids:
            rows = data.test_rows(fold)
            scores.add_all_vs_all(x[rows] @ x[rows].T, data.identities[rows], symmetric=True)
    return scores


@dataclass
class DirectionScores:
    """One direction source→target: mapped-to-mapped and cross scores, and the map's fit on test photos."""

    mapped: Scores
    cross: Scores
    r2: float
    mean_cosine: float
    maps: dict[int, FittedTransform]


def direction_scores(
    data: PairedLfw,
    fitter: Fitter,
    pairing: str = "same-image",
    n_fit: int | None = None,
    seed: int = 0,
    all_vs_all: bool = True,
) -> DirectionScores:
    """Fit one map per fold on the other folds' identities (`n_fit` random photos of them, if given)."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}")
    mapped = Scores(np.zeros(len(data.labels)))
    cross = Scores(np.zeros(len(data.labels)))
    residual = total = cosine_sum = 0.0
    tested = 0
    maps: dict[int, FittedTransform] = {}
    rng = np.random.default_rng(seed)
    for fold in data.fold_ids:
        fit = np.nonzero(data.fit_rows(fold))[0]
        if n_fit is not None and n_fit < len(fit):
            fit = np.sort(rng.choice(fit, n_fit, replace=False))
        x, y, groups = data.a[fit], data.b[fit], data.identities[fit]
        if pairing == "centroid":
            y = centroid_targets(y, groups)
        fitted = maps[fold] = fitter(x, y, groups)
        in_fold = data.folds == fold
        left = l2_normalize(fitted.transform(data.a[data.left[in_fold]]))
        right = l2_normalize(fitted.transform(data.a[data.right[in_fold]]))
        mapped.pairs[in_fold] = cosine_rows(left, right)
        cross.pairs[in_fold] = cosine_rows(left, data.b[data.right[in_fold]])

        rows = data.test_rows(fold)
        predicted = fitted.transform(data.a[rows])
        truth = data.b[rows]
        residual += float(((truth - predicted) ** 2).sum())
        total += float(((truth - truth.mean(axis=0)) ** 2).sum())
        cosine_sum += float(cosine_rows(predicted, truth).sum())
        tested += int(rows.sum())
        if all_vs_all:
            unit = l2_normalize(predicted)
            mapped.add_all_vs_all(unit @ unit.T, data.identities[rows], symmetric=True)
            cross.add_all_vs_all(unit @ truth.T, data.identities[rows], symmetric=False)
    return DirectionScores(mapped, cross, 1.0 - residual / total, cosine_sum / tested, maps)


def fused_cross_scores(data: PairedLfw, forward: DirectionScores, backward: DirectionScores) -> Scores:
    """Cross comparison using both maps: the mean of the score in B's space (A photo mapped) and in
    A's space (B photo mapped back). A service holding both maps can always compute it."""
    scores = Scores(np.zeros(len(data.labels)))
    for fold in data.fold_ids:
        in_fold = data.folds == fold
        a_left, b_right = data.a[data.left[in_fold]], data.b[data.right[in_fold]]
        in_b = cosine_rows(forward.maps[fold].transform(a_left), b_right)
        in_a = cosine_rows(a_left, backward.maps[fold].transform(b_right))
        scores.pairs[in_fold] = 0.5 * (in_b + in_a)
        rows = data.test_rows(fold)
        a_to_b = l2_normalize(forward.maps[fold].transform(data.a[rows]))
        b_to_a = l2_normalize(backward.maps[fold].transform(data.b[rows]))
        matrix = 0.5 * (a_to_b @ data.b[rows].T + data.a[rows] @ b_to_a.T)
        scores.add_all_vs_all(matrix, data.identities[rows], symmetric=False)
    return scores


@dataclass
class PairStudy:
    """Everything the report says about one ordered pair of models."""

    source: str
    target: str
    method: str
    pairing: str
    metrics: dict[str, Metrics]  # native_a, native_b, mapped, cross, reverse_mapped, reverse_cross, fused
    r2: float
    r2_reverse: float
    mean_cosine: float
    mean_cosine_reverse: float
    roc_scores: dict[str, Scores]


def study_pair(
    data: PairedLfw, fitter: Fitter, method: str, pairing: str = "same-image", seed: int = 0
) -> PairStudy:
    forward = direction_scores(data, fitter, pairing, seed=seed)
    backward = direction_scores(data.swapped(), fitter, pairing, seed=seed)
    scores = {
        "native_a": native_scores(data.a, data),
        "native_b": native_scores(data.b, data),
        "mapped": forward.mapped,
        "cross": forward.cross,
        "reverse_mapped": backward.mapped,
        "reverse_cross": backward.cross,
        "fused": fused_cross_scores(data, forward, backward),
    }
    return PairStudy(
        data.source,
        data.target,
        method,
        pairing,
        {k: summarise(v, data.labels, data.folds) for k, v in scores.items()},
        forward.r2,
        backward.r2,
        forward.mean_cosine,
        backward.mean_cosine,
        scores,
    )


@dataclass(frozen=True)
class CurvePoint:
    fitting_pairs: int
    mapped: float
    cross: float


def learning_curve(
    data: PairedLfw, fitter: Fitter, sizes: list[int], pairing: str = "same-image", seed: int = 0
) -> list[CurvePoint]:
    """10-fold accuracy of maps fitted on `n` corresponding photos (random, other folds' people)."""
    points = []
    largest = min(int(data.fit_rows(f).sum()) for f in data.fold_ids)
    for n in sorted({min(s, largest) for s in sizes}):
        scores = direction_scores(data, fitter, pairing, n_fit=n, seed=seed, all_vs_all=False)
        points.append(
            CurvePoint(
                n,
                ten_fold_accuracy(scores.mapped.pairs, data.labels, data.folds).mean,
                ten_fold_accuracy(scores.cross.pairs, data.labels, data.folds).mean,
            )
        )
    return points
