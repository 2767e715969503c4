"""Decision thresholds at named operating points, estimated from genuine and impostor scores.

Scores from different comparisons are distributed differently (a cross-model score of 0.4 means
something else than a same-model 0.4), so every space and every map carries its own thresholds.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

OPERATING_POINTS: dict[str, float] = {"far_1e-2": 1e-2, "far_1e-3": 1e-3, "far_1e-4": 1e-4}
MAX_ACCURACY = "max_accuracy"
DEFAULT_OPERATING_POINT = "far_1e-3"


class Threshold(BaseModel):
    """A cosine threshold and what it achieved on the calibration data."""

    threshold: float
    far: float = Field(description="false accept rate measured at this threshold")
    tar: float = Field(description="true accept rate measured at this threshold")
    reliable: bool = Field(description="enough impostor pairs to measure this FAR (≥ 10/FAR)")


class Calibration(BaseModel):
    """Thresholds per operating point, with the size of the data they come from."""

    thresholds: dict[str, Threshold]
    genuine_pairs: int
    impostor_pairs: int


def genuine_impostor_scores(
    left: np.ndarray, right: np.ndarray, identities: np.ndarray, max_impostors: int = 2_000_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """All-vs-all cosine scores between `left[i]` and `right[j]` for i < j (i != j when both sides differ).

    `left` and `right` are unit-length embeddings of the same images (possibly in different spaces);
    pairs of the same identity are genuine, the rest impostors (sub-sampled above `max_impostors`).
    """
    scores = left @ right.T
    same = identities[:, None] == identities[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    genuine = scores[same & upper]
    impostor = scores[~same & upper]
    if len(impostor) > max_impostors:
        impostor = np.random.default_rng(seed).choice(impostor, max_impostors, replace=False)
    return genuine, impostor


def calibrate(genuine: np.ndarray, impostor: np.ndarray) -> Calibration:
    """Thresholds for FAR 1e-2/1e-3/1e-4 (smallest threshold whose measured FAR ≤ target) and the
    threshold maximising balanced accuracy (mean of TAR and TRR)."""
    impostor_sorted = np.sort(impostor)[::-1]
    genuine_sorted = np.sort(genuine)
    thresholds: dict[str, Threshold] = {}

    def measure(t: float, reliable: bool) -> Threshold:
        far = float(np.mean(impostor >= t))
        tar = float(np.mean(genuine >= t))
        return Threshold(threshold=float(t), far=far, tar=tar, reliable=reliable)

    for name, target in OPERATING_POINTS.items():
        allowed = int(np.floor(target * len(impostor)))  # impostors that may score at or above t
        if allowed < len(impostor_sorted):
            t = float(np.nextafter(impostor_sorted[allowed], np.inf))
        else:
            t = float(impostor_sorted[-1])
        thresholds[name] = measure(t, len(impostor) * target >= 10)

    candidates = np.unique(np.concatenate([genuine, impostor]))
    tar = 1.0 - np.searchsorted(genuine_sorted, candidates, side="left") / len(genuine)
    trr = np.searchsorted(np.sort(impostor), candidates, side="left") / len(impostor)
    best = candidates[int(np.argmax(tar + trr))]
    thresholds[MAX_ACCURACY] = measure(float(best), True)
    return Calibration(thresholds=thresholds, genuine_pairs=len(genuine), impostor_pairs=len(impostor))
