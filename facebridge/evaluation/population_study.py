"""One direction A→B of the out-of-population protocol: select, fit, calibrate, then score elsewhere.

Everything that is learned comes from the fitting population: the method is chosen on a validation
split of its identities (neither the fit nor the scored population), the map is then fitted on all of
it, and the cross thresholds come from cross-fitting on it (each identity fold scored by a map that
never saw it). Only then is the other population scored: accuracy, TAR at FAR 1e-3/1e-4, and the FAR
the calibrated thresholds really reach there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facebridge.evaluation.population import (
    FittingData,
    PairSample,
    Population,
    PopulationMetrics,
    fitting_rows,
    measure,
    pair_scores,
    verification_pairs,
)
from facebridge.linalg import l2_normalize
from facebridge.mapping.calibration import OPERATING_POINTS, Calibration, calibrate
from facebridge.mapping.estimators import group_folds
from facebridge.mapping.methods import MapEstimator, make_map
from facebridge.mapping.residual import split_groups

CALIBRATION_IMPOSTORS = 1_000_000
CALIBRATIONS = ("validation", "cross-fit", "none")
VALIDATION_IMPOSTORS = 500_000


def check_disjoint(fit: Population, test: Population) -> None:
    """Refuse to score a population on maps fitted on any of its people or photos."""
    people = set(fit.identities.tolist()) & set(test.identities.tolist())
    if people:
        raise ValueError(f"{len(people)} identities are in both populations, e.g. {sorted(people)[0]}")
    files = {p.rsplit("/", 1)[-1] for p in fit.paths.tolist()} & {p.rsplit("/", 1)[-1] for p in test.paths}
    if files and fit.name == test.name:
        raise ValueError(f"{len(files)} photos are in both populations, e.g. {sorted(files)[0]}")


def fit_estimator(
    population: Population,
    source: str,
    target: str,
    method: str,
    augmentations: Sequence[str] = (),
    params: dict | None = None,
    data: FittingData | None = None,
) -> MapEstimator:
    """`method` fitted on `population`'s rows (`data`: resampled and extra fitting rows, if any): a bare
    estimator for a study to score (facebridge/mapping/fitting.py `fit_map` makes a map file's contents)."""
    x, y, groups = (data or FittingData()).rows(population, source, target, augmentations)
    estimator = make_map(method, **(params or {}))
    estimator.fit(x, y, groups)
    return estimator


def mapped(estimator: MapEstimator, x: np.ndarray) -> np.ndarray:
    return l2_normalize(estimator.transform(x)).astype(np.float32)


def cross_scores(
    estimator: MapEstimator, population: Population, source: str, target: str, pairs: PairSample
) -> tuple[np.ndarray, np.ndarray]:
    """Mapped source template against native target probe, both orders of every pair."""
    return pair_scores(mapped(estimator, population.clean[source]), population.clean[target], pairs)


def validation_scores(
    population: Population,
    source: str,
    target: str,
    methods: Sequence[str],
    augmentations: Sequence[str] = (),
    fraction: float = 0.2,
    seed: int = 0,
    params: Mapping[str, dict[str, Any]] | None = None,
    data: FittingData | None = None,
) -> tuple[dict[str, PopulationMetrics], dict[str, Calibration]]:
    """Each method fitted on (1 - fraction) of the identities, scored cross on the rest; with the
    cross thresholds those held-out scores give (out-of-sample for that method's map).

    `params`: estimator parameters by method; `data`: how the fitting identities become fitting rows
    (the validation identities are scored as they are)."""
    train, held = split_groups(population.identities, len(population), fraction, seed)
    fit_part, val_part = population.subset(train), population.subset(held)
    pairs = verification_pairs(val_part.identities, VALIDATION_IMPOSTORS, seed)
    results, calibrations = {}, {}
    for method in methods:
        estimator = fit_estimator(
            fit_part, source, target, method, augmentations, (params or {}).get(method), data
        )
        scores, labels = cross_scores(estimator, val_part, source, target, pairs)
        results[method] = measure(scores, labels)
        calibrations[method] = calibrate(
            scores[labels],
            scores[~labels],
            dataset=f"{population.name} (validation identities)",
            images=len(val_part),
            identities=len(np.unique(val_part.identities)),
            method="validation identities held out of the fit: mapped source vs native target, both orders",
        )
    return results, calibrations


def selection_score(metrics: PopulationMetrics) -> float:
    """How a method is ranked on validation: accuracy plus TAR at FAR 1e-3 (both are promised)."""
    return metrics.accuracy + metrics.tar_far_1e3


def cross_fitted_parts(
    population: Population,
    source: str,
    target: str,
    method: str,
    augmentations: Sequence[str],
    folds: int,
    seed: int,
    params: dict[str, Any] | None = None,
    data: FittingData | None = None,
) -> Iterator[tuple[MapEstimator, Population]]:
    """Each identity fold of `population`, with a map fitted on the other folds (and their variants;
    `data`: resampled and extra fitting rows, if any) with the estimator `params`."""
    for held in group_folds(len(population), population.identities, folds, seed):
        mask = np.zeros(len(population), bool)
        mask[held] = True
        yield (
            fit_estimator(population.subset(~mask), source, target, method, augmentations, params, data),
            population.subset(mask),
        )


def cross_fitted_calibration(
    population: Population,
    source: str,
    target: str,
    method: str,
    augmentations: Sequence[str] = (),
    folds: int = 4,
    seed: int = 0,
) -> Calibration:
    """Cross thresholds from every identity of `population`: each fold of identities is scored by a
    map fitted on the other folds, and the scores of all folds are pooled."""
    genuine, impostor = [], []
    for estimator, part in cross_fitted_parts(population, source, target, method, augmentations, folds, seed):
        pairs = verification_pairs(part.identities, CALIBRATION_IMPOSTORS // folds, seed)
        scores, labels = cross_scores(estimator, part, source, target, pairs)
        genuine.append(scores[labels])
        impostor.append(scores[~labels])
    return calibrate(
        np.concatenate(genuine),
        np.concatenate(impostor),
        dataset=population.name,
        images=len(population),
        identities=len(np.unique(population.identities)),
        method=f"cross-fitted: {folds} identity folds, each scored by a map fitted without them; "
        "mapped source vs native target, both orders",
    )


def space_calibration(population: Population, model: str, seed: int = 0) -> Calibration:
    """Same-space thresholds of one model from every genuine pair and 2M sampled impostor pairs."""
    pairs = verification_pairs(population.identities, CALIBRATION_IMPOSTORS * 2, seed)
    scores, labels = pair_scores(population.clean[model], population.clean[model], pairs)
    return calibrate(
        scores[labels],
        scores[~labels],
        dataset=population.name,
        images=len(population),
        identities=len(np.unique(population.identities)),
        method="every genuine pair and 2,000,000 sampled impostor pairs of one model's embeddings",
    )


def thresholds_of(calibration: Calibration) -> dict[str, tuple[float, float]]:
    return {
        name: (calibration.thresholds[name].threshold, nominal) for name, nominal in OPERATING_POINTS.items()
    }


@dataclass
class DirectionResult:
    """One direction of one population transfer, with everything measured on the scored people."""

    source: str
    target: str
    method: str
    augmentations: tuple[str, ...]
    fit_population: str
    test_population: str
    fit_rows: int
    fit_identities: int
    native_source: PopulationMetrics
    native_target: PopulationMetrics
    cross: PopulationMetrics
    mapped: PopulationMetrics
    validation: dict[str, PopulationMetrics] = field(default_factory=dict)
    calibration: Calibration | None = None

    @property
    def weaker_native(self) -> PopulationMetrics:
        return min(self.native_source, self.native_target, key=lambda m: m.accuracy)

    @property
    def accuracy_gap(self) -> float:
        """Cross accuracy minus the weaker native accuracy (negative: points lost)."""
        return self.cross.accuracy - self.weaker_native.accuracy

    @property
    def tar_ratio(self) -> float:
        weaker = min(self.native_source.tar_far_1e3, self.native_target.tar_far_1e3)
        return self.cross.tar_far_1e3 / weaker if weaker > 0 else float("nan")

    @property
    def meets_goal(self) -> bool:
        return self.accuracy_gap >= -0.01 and self.tar_ratio >= 0.9


@dataclass
class NativeCache:
    """Native metrics and same-space calibrations computed once per (population, model)."""

    pairs: dict[str, PairSample] = field(default_factory=dict)
    native: dict[tuple[str, str], PopulationMetrics] = field(default_factory=dict)
    spaces: dict[tuple[str, str], Calibration] = field(default_factory=dict)

    def sample(self, population: Population, seed: int) -> PairSample:
        if population.name not in self.pairs:
            self.pairs[population.name] = verification_pairs(population.identities, seed=seed)
        return self.pairs[population.name]

    def space(self, population: Population, model: str, seed: int) -> Calibration:
        key = (population.name, model)
        if key not in self.spaces:
            self.spaces[key] = space_calibration(population, model, seed)
        return self.spaces[key]

    def native_metrics(self, fit: Population, test: Population, model: str, seed: int) -> PopulationMetrics:
        """Native verification on `test`, with the FAR reached by `fit`'s same-space thresholds."""
        key = (f"{fit.name}->{test.name}", model)
        if key not in self.native:
            scores, labels = pair_scores(test.clean[model], test.clean[model], self.sample(test, seed))
            self.native[key] = measure(scores, labels, thresholds_of(self.space(fit, model, seed)))
        return self.native[key]


def study_direction(
    fit: Population,
    test: Population,
    source: str,
    target: str,
    methods: Sequence[str],
    augmentations: Sequence[str] = (),
    calibration: str = "validation",
    cache: NativeCache | None = None,
    seed: int = 0,
) -> DirectionResult:
    """Select among `methods` on a validation split of `fit`, fit on all of `fit`, score on `test`.

    `calibration`: where the cross thresholds checked on `test` come from: "validation" (the
    validation identities' scores of the chosen method), "cross-fit" (every identity of `fit`, by
    cross-fitting; costs one fit per fold) or "none"."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}")
    check_disjoint(fit, test)
    cache = cache or NativeCache()
    validation: dict[str, PopulationMetrics] = {}
    thresholds: Calibration | None = None
    method = methods[0]
    if len(methods) > 1 or calibration == "validation":
        validation, calibrations = validation_scores(fit, source, target, methods, augmentations, seed=seed)
        method = max(methods, key=lambda m: selection_score(validation[m]))
        thresholds = calibrations[method] if calibration == "validation" else None
        if len(methods) == 1:
            validation = {}
    estimator = fit_estimator(fit, source, target, method, augmentations)
    if calibration == "cross-fit":
        thresholds = cross_fitted_calibration(fit, source, target, method, augmentations, seed=seed)
    pairs = cache.sample(test, seed)
    unit = mapped(estimator, test.clean[source])
    x, _, groups = fitting_rows(fit, source, target, augmentations)
    return DirectionResult(
        source,
        target,
        method,
        tuple(augmentations),
        fit.name,
        test.name,
        len(x),
        len(np.unique(groups)),
        cache.native_metrics(fit, test, source, seed),
        cache.native_metrics(fit, test, target, seed),
        measure(
            *pair_scores(unit, test.clean[target], pairs), thresholds_of(thresholds) if thresholds else None
        ),
        measure(*pair_scores(unit, unit, pairs)),
        validation,
        thresholds,
    )
