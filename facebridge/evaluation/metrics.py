"""Verification metrics over similarity scores (higher = more alike) and same/different labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebridge.evaluation.verification import tar_at


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return float(np.mean((scores >= threshold) == labels))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold maximising accuracy; candidates are midpoints between sorted scores."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    # accuracy for every candidate at once: accepted positives + rejected negatives
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    true_accepts = len(pos) - np.searchsorted(pos, candidates, side="left")
    true_rejects = np.searchsorted(neg, candidates, side="left")
    correct = true_accepts + true_rejects
    return float(candidates[int(np.argmax(correct))])


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false accept rate, true accept rate, threshold) for every distinct score, thresholds descending."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1]
    tp = np.cumsum(sorted_labels)[distinct]
    fp = np.cumsum(~sorted_labels)[distinct]
    tar = np.r_[0.0, tp / max(1, labels.sum())]
    far = np.r_[0.0, fp / max(1, (~labels).sum())]
    thresholds = np.r_[np.inf, sorted_scores[distinct]]
    return far, tar, thresholds


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    far, tar, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tar, far))


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate: where the false accept rate meets the false reject rate (interpolated)."""
    far, tar, _ = roc_curve(scores, labels)
    frr = 1.0 - tar
    index = int(np.argmax(far >= frr))
    if index == 0:
        return float(far[0])
    # linear interpolation between the two ROC points that straddle FAR == FRR
    d0, d1 = frr[index - 1] - far[index - 1], frr[index] - far[index]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(far[index - 1] + t * (far[index] - far[index - 1]))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, target_far: float) -> float:
    """Best true accept rate whose false accept rate does not exceed `target_far`: `tar_at` (one
    partition, no ROC) on labelled scores."""
    same = np.asarray(labels, dtype=bool)
    return tar_at(scores[same], scores[~same], target_far)


@dataclass(frozen=True)
class TenFoldResult:
    fold_accuracies: list[float]
    fold_thresholds: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_accuracies))


def ten_fold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> TenFoldResult:
    """LFW protocol: per fold, the threshold is chosen on the other folds and applied to this one."""
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        threshold = best_threshold(scores[train], labels[train])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(scores[test], labels[test], threshold))
    return TenFoldResult(accuracies, thresholds)


@dataclass(frozen=True)
class VerificationReport:
    accuracy: TenFoldResult
    auc: float
    eer: float
    tar_at_far_1e3: float
    pairs: int


def verification_report(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> VerificationReport:
    return VerificationReport(
        ten_fold_accuracy(scores, labels, folds),
        auc(scores, labels),
        eer(scores, labels),
        tar_at_far(scores, labels, 1e-3),
        len(scores),
    )
