"""Fitting one map of the shipped bank from labelled populations: select, cross-fit, calibrate, fit.

The identities are split three ways by role, never by photo:
- a validation fifth (`validation_fraction`) on which the method is chosen, and nothing else;
- the rest, cross-fitted in `folds` identity folds: each fold is scored by a map fitted without it,
  and the pooled scores give the recorded quality and the calibrated thresholds (so thresholds come
  from nearly all labelled people, not a held-out quarter, and are still out-of-sample);
- then the shipped map is fitted on every identity.
The cross-fit's out-of-fold translations (every row translated by a map that never saw its person) also
train the map's per-template confidence predictor (facebridge/mapping/confidence.py).
`BankRecipe.data` may resample each population's fitting rows and add unlabelled photos to every fit
(fold maps, validation maps, the shipped map); the photos that form verification pairs are always the
labelled ones as they are, so resampled or unlabelled rows never make a genuine or impostor pair.
The thresholds' `far_range` widens their Clopper-Pearson interval by the largest FAR factor seen when
thresholds calibrated on one population were used on another (`far_factors`, from the population
study), because sampling error is not the only reason a threshold misses its FAR elsewhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facebridge import __version__
from facebridge.evaluation.population import (
    FittingData,
    Population,
    balanced_accuracy,
    pair_scores,
    verification_pairs,
)
from facebridge.evaluation.population_study import (
    cross_fitted_parts,
    fit_estimator,
    mapped,
    selection_score,
    validation_scores,
)
from facebridge.evaluation.population_study import space_calibration as study_space_calibration
from facebridge.mapping.calibration import Calibration, calibrate, widen_for_population
from facebridge.mapping.confidence import MIN_ROWS, ConfidenceModel
from facebridge.mapping.estimators import group_folds, row_cosine
from facebridge.mapping.mapfile import (
    FitPopulation,
    FitProvenance,
    MapCalibration,
    MapMetadata,
    MapQuality,
    ResidualTensors,
    SpaceRef,
)
from facebridge.mapping.methods import MapEstimator
from facebridge.mapping.residual import ResidualMLPMap, split_groups

# impostor pairs the shipped thresholds are read from, over the cross-fitted folds: twice a study's
# sample (evaluation/population_study.py CALIBRATION_IMPOSTORS), since every answer states them
BANK_CALIBRATION_IMPOSTORS = 2_000_000


@dataclass(frozen=True)
class BankRecipe:
    methods: tuple[str, ...] = ("ridge", "residual-mlp")
    augmentations: tuple[str, ...] = ()
    validation_fraction: float = 0.15
    folds: int = 3
    seed: int = 0
    far_factors: dict[str, float] = field(default_factory=dict)
    far_note: str = ""
    data: FittingData = field(default_factory=FittingData)  # resampled and extra (unlabelled) fitting rows
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # estimator parameters by method
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)  # (source, terms) by population
    # a method listed earlier (cheaper to serve: ridge is one matrix product, the residual MLP three) is
    # kept unless a later one scores more than this above it on validation (0: the best score wins)
    prefer_earlier_within: float = 0.0

    def params_for(self, method: str) -> dict[str, Any] | None:
        return self.params.get(method)


@dataclass
class FittedBankMap:
    meta: MapMetadata
    weight: np.ndarray
    bias: np.ndarray
    residual: ResidualTensors | None
    confidence: ConfidenceModel | None = None


def _residual(estimator: MapEstimator) -> ResidualTensors | None:
    if not isinstance(estimator, ResidualMLPMap):
        return None
    return ResidualTensors(
        estimator.in_weight_, estimator.in_bias_, estimator.out_weight_, estimator.out_bias_
    ).as_float32()


def _fitted_scalars(estimator: MapEstimator) -> dict[str, Any]:
    """Learned hyperparameters worth recording (scalars only; the tensors are in the file)."""
    out: dict[str, Any] = {}
    for key, value in vars(estimator).items():
        if key.endswith("_") and np.ndim(value) == 0:
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def widen(calibration: Calibration, recipe: BankRecipe) -> Calibration:
    factors = {k: v for k, v in recipe.far_factors.items() if k in calibration.thresholds}
    return widen_for_population(calibration, factors, recipe.far_note) if factors else calibration


@dataclass
class _Pooled:
    cross_genuine: list[np.ndarray] = field(default_factory=list)
    cross_impostor: list[np.ndarray] = field(default_factory=list)
    mapped_genuine: list[np.ndarray] = field(default_factory=list)
    mapped_impostor: list[np.ndarray] = field(default_factory=list)
    source: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    target: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    residual_sq: float = 0.0
    total_sq: float = 0.0
    cosine_sum: float = 0.0
    rows: int = 0
    out_of_fold: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def confidence(self, recipe: BankRecipe) -> ConfidenceModel | None:
        """The confidence predictor of the out-of-fold rows (source, raw output, cosine, identity)."""
        return fit_out_of_fold_confidence(self.out_of_fold, recipe.seed)


def fit_out_of_fold_confidence(
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], seed: int
) -> ConfidenceModel | None:
    if sum(len(r[2]) for r in rows) < MIN_ROWS:
        return None
    x, raw, cosine, groups = (np.concatenate([r[i] for r in rows]) for i in range(4))
    return ConfidenceModel(random_state=seed).fit(x, raw, cosine, groups)


def confidence_heldout(recipe: BankRecipe, identities: int) -> str:
    return (
        f"out-of-fold: {recipe.folds} identity folds of {identities} non-validation identities, each "
        "translated by a map fitted without them (clean photos)"
    )


def _cross_fit(population: Population, source: str, target: str, method: str, recipe: BankRecipe) -> _Pooled:
    pooled = _Pooled()
    per_fold = BANK_CALIBRATION_IMPOSTORS // recipe.folds
    for estimator, part in cross_fitted_parts(
        population,
        source,
        target,
        method,
        recipe.augmentations,
        recipe.folds,
        recipe.seed,
        recipe.params_for(method),
        recipe.data,
    ):
        pairs = verification_pairs(part.identities, per_fold, recipe.seed)
        raw = estimator.transform(part.clean[source])
        unit = mapped(estimator, part.clean[source])
        truth = part.clean[target].astype(np.float64)
        pooled.residual_sq += float(((truth - raw) ** 2).sum())
        pooled.total_sq += float(((truth - truth.mean(axis=0)) ** 2).sum())
        cosine = row_cosine(raw, truth)
        pooled.cosine_sum += float(cosine.sum())
        pooled.rows += len(truth)
        pooled.out_of_fold.append((part.clean[source], raw, cosine, part.identities))
        scores, labels = pair_scores(unit, part.clean[target], pairs)
        pooled.cross_genuine.append(scores[labels])
        pooled.cross_impostor.append(scores[~labels])
        scores, labels = pair_scores(unit, unit, pairs)
        pooled.mapped_genuine.append(scores[labels])
        pooled.mapped_impostor.append(scores[~labels])
        pooled.source.append(pair_scores(part.clean[source], part.clean[source], pairs))
        pooled.target.append(pair_scores(part.clean[target], part.clean[target], pairs))
    return pooled


def _pooled_accuracy(genuine: list[np.ndarray], impostor: list[np.ndarray]) -> float:
    g, i = np.concatenate(genuine), np.concatenate(impostor)
    return balanced_accuracy(np.r_[g, i], np.r_[np.ones(len(g), bool), np.zeros(len(i), bool)])


def _accuracy(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return balanced_accuracy(np.concatenate([s for s, _ in parts]), np.concatenate([lab for _, lab in parts]))


def choose_method(
    methods: Sequence[str], scores: dict[str, float], prefer_earlier_within: float = 0.0
) -> str:
    """The method to ship: the best validation score, except that a method listed earlier (cheaper to
    serve) is kept unless a later one beats it by more than `prefer_earlier_within`."""
    chosen = methods[0]
    for method in methods[1:]:
        if scores[method] > scores[chosen] + prefer_earlier_within:
            chosen = method
    return chosen


def fit_bank_map(
    population: Population,
    source: SpaceRef,
    target: SpaceRef,
    recipe: BankRecipe,
) -> FittedBankMap:
    """Select on validation identities, cross-fit quality and thresholds on the rest, fit on all."""
    s, t = source.model, target.model
    train, held = split_groups(
        population.identities, len(population), recipe.validation_fraction, recipe.seed
    )
    method, selection = recipe.methods[0], None
    if len(recipe.methods) > 1:
        # the same identity split as `train, held` above (same function, fraction and seed)
        metrics, _ = validation_scores(
            population,
            s,
            t,
            recipe.methods,
            recipe.augmentations,
            recipe.validation_fraction,
            recipe.seed,
            recipe.params,
            recipe.data,
        )
        scores = {m: selection_score(v) for m, v in metrics.items()}
        method = choose_method(recipe.methods, scores, recipe.prefer_earlier_within)
        rule = "best accuracy + TAR@FAR 1e-3 (cross)"
        if recipe.prefer_earlier_within:
            margin = recipe.prefer_earlier_within
            rule += f", an earlier-listed method kept unless beaten by more than {margin:g},"
        selection = (
            f"{rule} on {int(held.sum())} photos of "
            f"{len(np.unique(population.identities[held]))} validation identities, used for nothing else: "
            + ", ".join(f"{m} {v:.4f}" for m, v in scores.items())
        )
    rest = population.subset(train)
    pooled = _cross_fit(rest, s, t, method, recipe)
    identities = len(np.unique(rest.identities))
    described: dict[str, Any] = {"dataset": population.name, "images": len(rest), "identities": identities}
    cross_method = (
        f"cross-fitted: {recipe.folds} identity folds, each scored by a map fitted without them; "
        "mapped source vs native target, both orders"
    )
    cross = calibrate(
        np.concatenate(pooled.cross_genuine),
        np.concatenate(pooled.cross_impostor),
        **described,
        method=cross_method,
    )
    mapped_calibration = calibrate(
        np.concatenate(pooled.mapped_genuine),
        np.concatenate(pooled.mapped_impostor),
        **described,
        method=cross_method.replace("mapped source vs native target, both orders", "mapped vs mapped"),
    )
    quality = MapQuality(
        mean_cosine=pooled.cosine_sum / pooled.rows,
        r2=1.0 - pooled.residual_sq / pooled.total_sq,
        accuracy_source_native=_accuracy(pooled.source),
        accuracy_target_native=_accuracy(pooled.target),
        accuracy_mapped=_pooled_accuracy(pooled.mapped_genuine, pooled.mapped_impostor),
        accuracy_cross=_pooled_accuracy(pooled.cross_genuine, pooled.cross_impostor),
        verification_pairs=sum(map(len, pooled.cross_genuine)) + sum(map(len, pooled.cross_impostor)),
    )
    confidence = pooled.confidence(recipe)
    estimator = fit_estimator(
        population, s, t, method, recipe.augmentations, recipe.params_for(method), recipe.data
    )
    parts = recipe.data.parts(population, s, t, recipe.augmentations)
    rows = sum(len(p.x) for p in parts)
    labelled = np.concatenate([p.groups for p in parts if p.labelled])
    kinds = ", ".join(recipe.augmentations) or "none"
    meta = MapMetadata(
        source=source,
        target=target,
        method=method,
        params=estimator.get_params(),
        fitted=_fitted_scalars(estimator),
        provenance=FitProvenance(
            dataset="+".join([population.name, *(p.name for p in parts if not p.labelled)]),
            images=rows,
            identities=len(np.unique(labelled)),
            heldout_images=len(rest),
            heldout_identities=identities,
            pairing=f"same photo through both models: {len(population)} clean photos plus augmented "
            f"variants ({kinds}); quality and thresholds cross-fitted" + _extra_rows(recipe.data),
            seed=recipe.seed,
            selection=selection,
            populations=[
                FitPopulation(
                    name=p.name,
                    images=len(p.photos),
                    identities=len(np.unique(p.photos.identities)) if p.labelled else None,
                    rows=len(p.x),
                    source=recipe.origins.get(p.name, ("", ""))[0],
                    terms=recipe.origins.get(p.name, ("", ""))[1],
                )
                for p in parts
            ],
        ),
        quality=quality,
        calibration=MapCalibration(cross=widen(cross, recipe), mapped=widen(mapped_calibration, recipe)),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        code_version=__version__,
        confidence=confidence.info(confidence_heldout(recipe, identities)) if confidence else None,
    )
    affine: Any = estimator  # every shippable method ends with an affine part (coef_, intercept_)
    coef = np.asarray(affine.coef_, np.float32)
    intercept = np.asarray(affine.intercept_, np.float32)
    return FittedBankMap(meta, coef, intercept, _residual(estimator), confidence)


def _extra_rows(data: FittingData) -> str:
    """What `data` adds to the pairing's description ("" when nothing)."""
    extra = ""
    if data.balance is not None:
        extra += f"; each population's fitting photos resampled to {data.balance} (seed {data.seed})"
    if data.unlabelled is not None:
        extra += (
            f"; plus {len(data.unlabelled)} unlabelled {data.unlabelled.name} photos as fitting rows only "
            "(each its own group; never in selection, quality, thresholds or confidence)"
        )
    return extra


def fit_bank_confidence(
    population: Population,
    source: str,
    target: str,
    method: str,
    recipe: BankRecipe,
    params: dict[str, Any] | None = None,
) -> tuple[ConfidenceModel | None, str]:
    """A shipped map's confidence predictor alone, from the same identity split and folds as
    `fit_bank_map` (the shipped weights are not refitted): (predictor, how its rows were held out).

    The fold maps use `recipe.augmentations`, `recipe.data` and the recipe's parameters of `method`
    updated with the estimator `params` given (e.g. a ridge penalty fixed at the shipped map's), so a
    caller can trade their fidelity to the shipped map for time."""
    params = {**(recipe.params_for(method) or {}), **(params or {})} or None
    train, _ = split_groups(population.identities, len(population), recipe.validation_fraction, recipe.seed)
    rest = population.subset(train)
    rows = []
    for held in group_folds(len(rest), rest.identities, recipe.folds, recipe.seed):  # as cross_fitted_parts
        mask = np.zeros(len(rest), bool)
        mask[held] = True
        estimator = fit_estimator(
            rest.subset(~mask), source, target, method, recipe.augmentations, params, recipe.data
        )
        part = rest.subset(mask)
        raw = estimator.transform(part.clean[source])
        cosine = row_cosine(raw, part.clean[target].astype(np.float64))
        rows.append((part.clean[source], raw, cosine, part.identities))
    heldout = confidence_heldout(recipe, len(np.unique(rest.identities)))
    return fit_out_of_fold_confidence(rows, recipe.seed), heldout


def space_calibration(population: Population, model: str, recipe: BankRecipe) -> Calibration:
    """Same-space thresholds from every genuine pair and 2M sampled impostor pairs of all people,
    stating the population-shift range."""
    return widen(study_space_calibration(population, model, recipe.seed), recipe)


def merge(populations: Sequence[Population]) -> Population:
    """One population of several (disjoint people): paths prefixed by the population's name."""
    models = set.intersection(*(set(p.clean) for p in populations))
    offsets = np.cumsum([0, *(len(p) for p in populations)])
    variants = {}
    for kind in sorted(set().union(*(p.variants for p in populations))):
        having = [(p, o) for p, o in zip(populations, offsets, strict=False) if kind in p.variants]
        variants[kind] = (
            np.concatenate([p.variants[kind][0] + o for p, o in having]),
            {m: np.concatenate([p.variants[kind][1][m] for p, _ in having]) for m in models},
        )
    return Population(
        "+".join(p.name for p in populations),
        np.concatenate([np.char.add(f"{p.name}/", p.paths.astype(str)) for p in populations]),
        np.concatenate([p.identities for p in populations]),
        {m: np.concatenate([p.clean[m] for p in populations]) for m in models},
        variants,
    )
