"""Drift watch: the FAR the shipped raw thresholds reach on the deployment's population, estimated
from its unlabelled cohort alone.

Pairs of cohort templates are taken as impostor pairs (a gallery holds each person once) and the
estimate is the fraction that scores at or above a threshold. Where a cohort holds several photos of
the same people (a folder of photos rather than a gallery), those pairs count as impostors too and the
estimate runs high by roughly one over the number of people (docs/thresholds.md measures it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from facebridge.cohort.scoring import Scoring, comparison_key
from facebridge.mapping.calibration import OPERATING_POINTS, clopper_pearson

if TYPE_CHECKING:
    from facebridge.mapping.bank import MappingBank
    from facebridge.mapping.compare import ComparisonPlan

log = logging.getLogger(__name__)
WARN_FACTOR = 2.0  # the log warns when an estimate is off the nominal FAR by more than this


@dataclass(frozen=True)
class DriftEstimate:
    """The estimated FAR of one shipped raw threshold on the cohort's population."""

    comparison: str
    operating_point: str
    nominal_far: float
    threshold: float
    estimated_far: float
    interval: tuple[float, float]
    pairs: int
    cohorts: tuple[str, ...]

    @property
    def ratio(self) -> float:
        return self.estimated_far / self.nominal_far

    @property
    def off(self) -> bool:
        return not (1 / WARN_FACTOR <= self.ratio <= WARN_FACTOR)


def cohort_pair_scores(scoring: Scoring, plan: ComparisonPlan) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """Scores of cohort pairs as the plan would compare them (None when no cohort serves both kinds).

    Same space: every pair i < j of the space's cohort. Across models: the source cohort carried
    through the plan's map against the target space's own cohort, every (i, j) with i != j where both
    are drawn from one gallery of the same size."""
    native = scoring.cohorts.get(plan.space)
    if native is None:
        return None
    if plan.path is None:
        scores = native.templates @ native.templates.T
        upper = np.triu_indices(len(native), 1)
        return scores[upper], (native.id,)
    source = scoring.cohorts.get(plan.path.source)
    if source is None:
        return None
    scores = scoring.mapped_cohort(source, plan.path) @ native.templates.T
    same_gallery = (
        len(source) == len(native) and source.meta.provenance.source == native.meta.provenance.source
    )
    if same_gallery:
        return scores[~np.eye(len(native), dtype=bool)], (source.id, native.id)
    return scores.ravel(), (source.id, native.id)


def estimate_drift(bank: MappingBank, scoring: Scoring) -> list[DriftEstimate]:
    """An estimate for every operating point of every same-space and direct-map comparison that has
    a shipped raw calibration and cohorts to score it with."""
    from facebridge.mapping.compare import plan_comparison

    estimates = []
    plans = [plan_comparison(bank, s, s) for s in sorted(scoring.cohorts) if s in bank.spaces]
    plans += [plan_comparison(bank, a, b, b) for (a, b) in sorted(bank.maps) if b in scoring.cohorts]
    for plan in plans:
        if plan.calibration is None:
            continue
        found = cohort_pair_scores(scoring, plan)
        if found is None:
            continue
        scores, cohorts = found
        for point, nominal in OPERATING_POINTS.items():
            threshold = plan.calibration.thresholds[point].threshold
            accepted = int(np.count_nonzero(scores >= threshold))
            estimates.append(
                DriftEstimate(
                    comparison_key(plan) or plan.space,
                    point,
                    nominal,
                    threshold,
                    accepted / len(scores),
                    clopper_pearson(accepted, len(scores)),
                    len(scores),
                    cohorts,
                )
            )
    return estimates


def drift_of(bank: MappingBank) -> list[DriftEstimate]:
    """The bank's drift estimates, computed on first use (a bank is immutable once loaded)."""
    if bank.scoring.drift_cache is None:
        bank.scoring.drift_cache = estimate_drift(bank, bank.scoring)
    return list(bank.scoring.drift_cache)


def warn_about_drift(estimates: list[DriftEstimate]) -> None:
    """One warning per comparison whose default operating point is off by more than WARN_FACTOR."""
    for estimate in estimates:
        if estimate.operating_point == "far_1e-3" and estimate.off:
            log.warning(
                "drift: on the cohort's population the shipped %s threshold of %s (%.4f) is estimated to "
                "reach FAR %.2e, %.1fx the nominal %.0e; give a calibration of your own people "
                "(facebridge calibrate) or rely on the normalised scores",
                estimate.operating_point,
                estimate.comparison,
                estimate.threshold,
                estimate.estimated_far,
                estimate.ratio,
                estimate.nominal_far,
            )
