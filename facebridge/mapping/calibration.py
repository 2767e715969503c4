"""Decision thresholds at named operating points, estimated from genuine and impostor scores.

Scores from different comparisons are distributed differently (a cross-model score of 0.4 means
something else than a same-model 0.4), so every space and every map carries its own thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field, model_validator

OPERATING_POINTS: dict[str, float] = {"far_1e-2": 1e-2, "far_1e-3": 1e-3, "far_1e-4": 1e-4}
MAX_ACCURACY = "max_accuracy"
DEFAULT_OPERATING_POINT = "far_1e-3"
INTERVAL_KIND = "clopper-pearson 95%"
SPACE_METHOD = "all-vs-all pairs of one model's embeddings (impostor pairs sub-sampled above 2,000,000)"
HELDOUT_CROSS_METHOD = "identities held out of the fit: mapped source vs native target, both orders"
HELDOUT_MAPPED_METHOD = "identities held out of the fit: mapped source vs mapped source"
Interval = tuple[float, float]


class Threshold(BaseModel):
    """A cosine threshold and what it achieved on the calibration data."""

    threshold: float
    far: float = Field(description="false accept rate measured at this threshold")
    tar: float = Field(description="true accept rate measured at this threshold")
    reliable: bool = Field(description="enough impostor pairs to measure this FAR (≥ 10/FAR)")
    far_interval: Interval | None = Field(
        default=None, description="where the FAR of this population lies, given how few impostors passed"
    )
    tar_interval: Interval | None = Field(default=None, description="the same for the TAR (genuine pairs)")
    interval: str | None = Field(
        default=None, description="how the intervals are meant, e.g. " + INTERVAL_KIND
    )
    far_range: Interval | None = Field(
        default=None, description="the FAR this threshold is expected to reach on another population"
    )
    far_range_note: str | None = Field(default=None, description="where far_range comes from")


TAIL_FARS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)


class Calibration(BaseModel):
    """Thresholds per operating point, with the data they come from."""

    thresholds: dict[str, Threshold]
    genuine_pairs: int
    impostor_pairs: int
    dataset: str | None = Field(default=None, description="e.g. lfw+celeba-dev")
    images: int | None = None
    identities: int | None = None
    method: str | None = Field(default=None, description="how the pairs were formed and scored")
    impostor_tail: list[tuple[float, float]] | None = Field(
        default=None,
        description="(FAR, threshold) pairs of the calibration impostors between and beyond the operating "
        "points: what a threshold's FAR was there, for estimates at thresholds no operating point names",
    )

    @model_validator(mode="after")
    def _fill_intervals(self) -> Calibration:
        """Files written before intervals were recorded still state them: far and tar are exact
        fractions of the recorded pair counts, so the counts are recovered and the interval is exact."""
        if self.genuine_pairs <= 0 or self.impostor_pairs <= 0:
            return self
        for name, point in list(self.thresholds.items()):
            if point.interval is None:
                far_k = _count(point.far, self.impostor_pairs)
                tar_k = _count(point.tar, self.genuine_pairs)
                self.thresholds[name] = _with_intervals(
                    point, far_k, self.impostor_pairs, tar_k, self.genuine_pairs
                )
        return self


def _count(rate: float, n: int) -> int:
    """The pair count behind a rate measured on n pairs."""
    return min(n, max(0, round(rate * n)))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Exact two-sided binomial interval for k successes out of n: never narrower than the truth
    allows, which matters at FAR 1e-4 where only a handful of impostors pass."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    from scipy.stats import beta  # imported on first use: scipy costs the service's start-up otherwise

    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _with_intervals(point: Threshold, far_k: int, impostors: int, tar_k: int, genuines: int) -> Threshold:
    """`point` with its FAR and TAR intervals, from the pair counts at its threshold."""
    update = {
        "far_interval": clopper_pearson(far_k, impostors),
        "tar_interval": clopper_pearson(tar_k, genuines),
        "interval": INTERVAL_KIND,
    }
    return point.model_copy(update=update)


def widen_for_population(calibration: Calibration, factors: dict[str, float], note: str) -> Calibration:
    """A copy whose operating points in `factors` state `far_range`: the Clopper-Pearson interval
    widened by f (FAR on a second population / nominal FAR, measured elsewhere), because sampling
    error is not the only reason a threshold misses its FAR on someone else's faces."""
    unknown = set(factors) - set(calibration.thresholds)
    if unknown:
        raise ValueError(f"no operating point(s) {sorted(unknown)} in this calibration")
    thresholds = dict(calibration.thresholds)
    for name, factor in factors.items():
        if not (math.isfinite(factor) and factor >= 1.0):
            raise ValueError(f"{name}: population factor must be a finite number >= 1, got {factor}")
        interval = thresholds[name].far_interval
        if interval is None:
            raise ValueError(f"{name}: no far_interval to widen")
        far_range = (interval[0] / factor, min(1.0, interval[1] * factor))
        thresholds[name] = thresholds[name].model_copy(
            update={"far_range": far_range, "far_range_note": note}
        )
    return calibration.model_copy(update={"thresholds": thresholds})


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


def calibrate(
    genuine: np.ndarray,
    impostor: np.ndarray,
    *,
    dataset: str | None = None,
    images: int | None = None,
    identities: int | None = None,
    method: str | None = None,
) -> Calibration:
    """Thresholds for FAR 1e-2/1e-3/1e-4 (smallest threshold whose measured FAR ≤ target) and the
    threshold maximising balanced accuracy (mean of TAR and TRR), each with its intervals; the data
    description is recorded so a threshold can be judged against the population it is used on."""
    impostor_sorted = np.sort(impostor)[::-1]
    genuine_sorted = np.sort(genuine)
    thresholds: dict[str, Threshold] = {}

    def measure(t: float, reliable: bool) -> Threshold:
        far_k = int(np.count_nonzero(impostor >= t))
        tar_k = int(np.count_nonzero(genuine >= t))
        point = Threshold(
            threshold=float(t), far=far_k / len(impostor), tar=tar_k / len(genuine), reliable=reliable
        )
        return _with_intervals(point, far_k, len(impostor), tar_k, len(genuine))

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
    return Calibration(
        thresholds=thresholds,
        genuine_pairs=len(genuine),
        impostor_pairs=len(impostor),
        dataset=dataset,
        images=images,
        identities=identities,
        method=method,
    )


def calibrate_pooled(
    genuine: Sequence[np.ndarray],
    impostor: Sequence[np.ndarray],
    *,
    dataset: str | None = None,
    images: int | None = None,
    identities: int | None = None,
    method: str | None = None,
) -> Calibration:
    """`calibrate` over several populations weighted equally, whatever their sizes: the FAR of a
    threshold is the mean of the populations' FARs, so a large population does not drown a small one.

    Counts and intervals use Kish's effective sample size of the weighted pairs, so a small population
    weighed up does not pass for more evidence than it is.
    """
    if not genuine or len(genuine) != len(impostor):
        raise ValueError("need one genuine and one impostor array per population")
    g_scores, g_weights = _pooled(genuine)
    i_scores, i_weights = _pooled(impostor)
    g_effective, i_effective = _effective(g_weights), _effective(i_weights)
    g_sorted, g_above = _sorted_with_weight_above(g_scores, g_weights)
    i_sorted, i_above = _sorted_with_weight_above(i_scores, i_weights)
    i_descending, i_cumulative = i_sorted[::-1], np.cumsum(np.diff(i_above[::-1]))

    def weighted(cuts: np.ndarray | float, sorted_scores: np.ndarray, above: np.ndarray) -> np.ndarray:
        return np.minimum(1.0, above[np.searchsorted(sorted_scores, cuts, side="left")])

    def measure(t: float, reliable: bool) -> Threshold:
        far = float(weighted(t, i_sorted, i_above))
        tar = float(weighted(t, g_sorted, g_above))
        point = Threshold(threshold=float(t), far=far, tar=tar, reliable=reliable)
        return _with_intervals(
            point, _count(far, i_effective), i_effective, _count(tar, g_effective), g_effective
        )

    def threshold_for(target: float) -> float:
        k = int(np.searchsorted(i_cumulative, target, side="right"))  # first impostor that would exceed it
        return float(np.nextafter(i_descending[min(k, len(i_descending) - 1)], np.inf))

    thresholds = {
        name: measure(threshold_for(target), i_effective * target >= 10)
        for name, target in OPERATING_POINTS.items()
    }
    grid = np.unique(
        np.r_[g_sorted[:: max(1, len(g_sorted) // 1000)], i_sorted[:: max(1, len(i_sorted) // 1000)]]
    )
    balanced = weighted(grid, g_sorted, g_above) - weighted(grid, i_sorted, i_above)
    thresholds[MAX_ACCURACY] = measure(float(grid[int(np.argmax(balanced))]), True)
    tail = [(far, threshold_for(far)) for far in TAIL_FARS if i_effective * far >= 1]
    return Calibration(
        thresholds=thresholds,
        genuine_pairs=g_effective,
        impostor_pairs=i_effective,
        dataset=dataset,
        images=images,
        identities=identities,
        method=method,
        impostor_tail=tail,
    )


def _pooled(groups: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Scores concatenated, each weighted 1 / (its population's size x the number of populations)."""
    scores = np.concatenate([np.asarray(g, np.float64) for g in groups])
    weights = np.concatenate([np.full(len(g), 1.0 / (len(g) * len(groups))) for g in groups])
    return scores, weights


def _sorted_with_weight_above(scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores ascending and, for each position (and one past the end), the total weight from there on:
    the weight at or above a cut is `above[searchsorted(scores, cut, "left")]`."""
    order = np.argsort(scores, kind="stable")
    above = np.r_[np.cumsum(weights[order][::-1])[::-1], 0.0]
    return scores[order], above


def _effective(weights: np.ndarray) -> int:
    """Kish's effective sample size (sum w)^2 / sum w^2 of weighted observations."""
    return max(1, int(weights.sum() ** 2 / np.square(weights).sum()))


def far_from_tail(calibration: Calibration, threshold: float) -> float | None:
    """The FAR the calibration impostors reached at `threshold`, read off `impostor_tail` by
    log-linear interpolation (None outside the tail or without one)."""
    tail = calibration.impostor_tail
    if not tail:
        return None
    fars = np.array([f for f, _ in tail])
    cuts = np.array([t for _, t in tail])  # rising as the FAR falls
    if threshold < cuts[0] or threshold > cuts[-1]:
        return None
    return float(np.exp(np.interp(threshold, cuts, np.log(fars))))
