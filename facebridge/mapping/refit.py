"""Refitting a map on a deployment's own paired templates, and keeping it only if it is better there.

During a roll-out from model A to model B, an identity system can record each new capture embedded by
both models (facebridge.pairs). Those pairs come from the very population the map will serve, which
public photos are not. A refit fits on the public base data plus the deployment's pairs, and the
deployment's subjects are split three ways by subject:

- fit: their pairs join the base data the map is fitted on;
- validation: chooses the method (ridge or residual MLP), used for nothing else;
- held-out: never seen by any fit; the current map and the refitted one are both scored on them, and
  the refitted map's thresholds are calibrated on them (on the base data, flagged, when they are too
  few to calibrate).

The split is a hash of (seed, subject id), so a subject keeps its side as pairs accumulate and a later
refit cannot train on people an earlier one held out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from facebridge import __version__
from facebridge.evaluation.population import (
    PairSample,
    Population,
    PopulationMetrics,
    measure,
    pair_scores,
    verification_pairs,
)
from facebridge.evaluation.population_study import (
    CALIBRATION_IMPOSTORS,
    cross_fitted_calibration,
    cross_scores,
    fit_estimator,
    selection_score,
)
from facebridge.linalg import l2_normalize
from facebridge.mapping.bank import apply_map_tensors
from facebridge.mapping.bank_fit import FittedBankMap, _fitted_scalars, _residual, merge
from facebridge.mapping.calibration import Calibration, calibrate
from facebridge.mapping.confidence import ConfidenceModel
from facebridge.mapping.mapfile import (
    FitProvenance,
    MapCalibration,
    MapMetadata,
    MapQuality,
    ResidualTensors,
    SpaceRef,
)
from facebridge.mapping.methods import MapEstimator

DEPLOYMENT = "deployment"


@dataclass(frozen=True)
class RefitPlan:
    """How a refit splits the deployment's subjects and what it may choose from."""

    methods: tuple[str, ...] = ("ridge", "residual-mlp")
    # how many times each deployment pair counts against one base photo: a few hundred pairs of the
    # served population would otherwise be drowned by tens of thousands of public photos
    deployment_weights: tuple[int, ...] = (1, 4)
    # the current map plus a ridge correction fitted on deployment pairs alone, one per penalty
    adapter_alphas: tuple[float, ...] = (1.0, 3.0, 10.0)
    validation: float = 0.2
    heldout: float = 0.2
    base_augmentations: tuple[str, ...] = ()
    min_heldout_subjects: int = 10
    min_heldout_genuine: int = 100
    seed: int = 0


@dataclass
class SplitSizes:
    fit_subjects: int
    validation_subjects: int
    heldout_subjects: int
    fit_rows: int
    validation_rows: int
    heldout_rows: int


@dataclass
class RefitResult:
    """What a refit found on the held-out deployment subjects, and the map it would write."""

    method: str
    choice: str
    selection: dict[str, float]
    before: PopulationMetrics | None
    after: PopulationMetrics
    calibration: Calibration
    calibrated_on_deployment: bool
    split: SplitSizes
    fitted: FittedBankMap

    @property
    def improved(self) -> bool:
        """Better on the held-out subjects: accuracy plus TAR at FAR 1e-3 (both are promised)."""
        return self.before is None or selection_score(self.after) > selection_score(self.before)


def subject_sides(subjects: np.ndarray, plan: RefitPlan) -> np.ndarray:
    """0 fit, 1 validation, 2 held-out per row, from a hash of (seed, subject): stable across refits."""
    unique, inverse = np.unique(subjects.astype(str), return_inverse=True)
    draws = np.array(
        [
            int.from_bytes(hashlib.sha256(f"{plan.seed}:{s}".encode()).digest()[:8], "big") / 2**64
            for s in unique.tolist()
        ]
    )
    side = np.where(draws < plan.heldout, 2, np.where(draws < plan.heldout + plan.validation, 1, 0))
    return np.asarray(side[inverse])


def deployment_population(
    subjects: np.ndarray, source: str, x: np.ndarray, target: str, y: np.ndarray
) -> Population:
    """Recorded pairs as a population: one row per capture, the subject as its identity."""
    rows = np.arange(len(subjects))
    return Population(
        DEPLOYMENT,
        np.char.add("capture-", rows.astype(str)),
        np.asarray(subjects).astype(str),
        {source: l2_normalize(np.asarray(x, np.float32)), target: l2_normalize(np.asarray(y, np.float32))},
    )


def _pool(base: Population | None, part: Population, weight: int = 1) -> Population:
    """Base photos plus the deployment part, each of its pairs counted `weight` times."""
    if weight > 1:
        part = part.subset(np.tile(np.arange(len(part)), weight))
    return merge([base, part]) if base is not None else part


class DeploymentAdapter:
    """The current map plus a ridge correction `x @ A + c` fitted on deployment pairs alone.

    Drift-Adapter's idea (a small correction over a frozen map, learned from few paired samples) in its
    linear form, which folds into the map's affine part: the written file is an ordinary map
    (weight + A, bias + c, the same residual MLP), served and verified like any other.
    """

    method = "adapter"

    def __init__(
        self, weight: np.ndarray, bias: np.ndarray, residual: ResidualTensors | None, alpha: float = 3.0
    ) -> None:
        self.weight, self.bias, self.residual, self.alpha = weight, bias, residual, alpha

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "base": "the current map's tensors", "hidden": self.hidden}

    @property
    def hidden(self) -> int | None:
        return self.residual.hidden if self.residual is not None else None

    def _base(self, x: np.ndarray) -> np.ndarray:
        return apply_map_tensors(np.asarray(x, np.float32), self.weight, self.bias, self.residual)

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> DeploymentAdapter:
        features = np.hstack([x, np.ones((len(x), 1), x.dtype)]).astype(np.float64)
        residual = (np.asarray(y, np.float64) - self._base(x)).astype(np.float64)
        gram = features.T @ features + self.alpha * np.eye(features.shape[1])
        correction = np.linalg.solve(gram, features.T @ residual)
        self.coef_ = (self.weight + correction[:-1]).astype(np.float32)
        self.intercept_ = (self.bias + correction[-1]).astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return apply_map_tensors(np.asarray(x, np.float32), self.coef_, self.intercept_, self.residual)


Builder = Callable[[Population], Any]


class MapLike(Protocol):
    """What a refit needs of the current map: its tensors (a LoadedMap has them)."""

    @property
    def weight(self) -> np.ndarray: ...
    @property
    def bias(self) -> np.ndarray: ...
    @property
    def residual(self) -> ResidualTensors | None: ...


@dataclass(frozen=True)
class FittedTensors:
    """A fitted estimator's tensors as a MapLike (e.g. a map fitted in a study, not loaded from a file)."""

    weight: np.ndarray
    bias: np.ndarray
    residual: ResidualTensors | None = None

    @classmethod
    def of(cls, estimator: Any) -> FittedTensors:
        weight, bias = np.asarray(estimator.coef_, np.float32), np.asarray(estimator.intercept_, np.float32)
        return cls(weight, bias, _residual(estimator))


def apply_current(current: MapLike, x: np.ndarray) -> np.ndarray:
    return l2_normalize(
        apply_map_tensors(np.asarray(x, np.float32), current.weight, current.bias, current.residual)
    )


def _candidates(
    base: Population | None, current: MapLike | None, source: str, target: str, plan: RefitPlan
) -> dict[str, Builder]:
    """Every refit the plan allows, by name; each fits on a deployment part (plus base data)."""
    builders: dict[str, Builder] = {}
    weights = plan.deployment_weights if base is not None else (1,)
    for weight in weights:
        for method in plan.methods:

            def pooled(part: Population, method: str = method, weight: int = weight) -> MapEstimator:
                return fit_estimator(
                    _pool(base, part, weight), source, target, method, plan.base_augmentations
                )

            builders[f"{method}, deployment pairs x{weight}" if base is not None else method] = pooled
    if current is not None:
        for alpha in plan.adapter_alphas:

            def adapted(part: Population, alpha: float = alpha) -> DeploymentAdapter:
                assert current is not None
                adapter = DeploymentAdapter(current.weight, current.bias, current.residual, alpha)
                return adapter.fit(part.clean[source], part.clean[target])

            builders[f"adapter over the current map, alpha {alpha:g}"] = adapted
    return builders


def refit(
    deployment: Population,
    source: SpaceRef,
    target: SpaceRef,
    base: Population | None = None,
    current: MapLike | None = None,
    plan: RefitPlan | None = None,
) -> RefitResult:
    """Choose, fit and calibrate a source->target map on base + deployment pairs (or an adapter over
    the current map); score it and the current map on the held-out deployment subjects."""
    plan = plan or RefitPlan()
    s, t = source.model, target.model
    side = subject_sides(deployment.identities, plan)
    fit_part, val_part, held_part = (deployment.subset(side == k) for k in (0, 1, 2))
    if min(len(np.unique(p.identities)) for p in (fit_part, val_part, held_part)) < 2:
        raise ValueError(
            f"too few deployment subjects to refit: {len(np.unique(deployment.identities))} "
            "(each of fit, validation and held-out needs at least 2)"
        )
    augmentations = plan.base_augmentations
    builders = _candidates(base, current, s, t, plan)
    selection: dict[str, float] = {}
    if len(builders) > 1:
        val_pairs = verification_pairs(val_part.identities, CALIBRATION_IMPOSTORS // 2, plan.seed)
        for name, build in builders.items():
            scores, labels = cross_scores(build(fit_part), val_part, s, t, val_pairs)
            selection[name] = selection_score(measure(scores, labels))
    choice = max(selection, key=lambda k: selection[k]) if selection else next(iter(builders))
    deployment_train = dataclasses.replace(merge([fit_part, val_part]), name=DEPLOYMENT)
    estimator = builders[choice](deployment_train)
    method = estimator.method
    train = (
        _pool(base, deployment_train) if not isinstance(estimator, DeploymentAdapter) else deployment_train
    )
    held_pairs = verification_pairs(held_part.identities, CALIBRATION_IMPOSTORS, plan.seed)
    # the held-out rows are translated once; cross scores, quality, calibrations and the confidence
    # predictor all read this one result
    raw_held = estimator.transform(held_part.clean[s])
    mapped_held = l2_normalize(raw_held).astype(np.float32)
    scores, labels = pair_scores(mapped_held, held_part.clean[t], held_pairs)
    mapped_scores, mapped_labels = pair_scores(mapped_held, mapped_held, held_pairs)
    after = measure(scores, labels)
    before = None
    if current is not None:
        moved = apply_current(current, held_part.clean[s]).astype(np.float32)
        before = measure(*pair_scores(moved, held_part.clean[t], held_pairs))

    quality = _heldout_quality(
        raw_held, held_part, s, t, held_pairs, after, measure(mapped_scores, mapped_labels)
    )
    held_subjects = len(np.unique(held_part.identities))
    enough = held_subjects >= plan.min_heldout_subjects and int(labels.sum()) >= plan.min_heldout_genuine
    if enough:
        calibration = calibrate(
            scores[labels],
            scores[~labels],
            dataset=f"{DEPLOYMENT} (held-out subjects)",
            images=len(held_part),
            identities=held_subjects,
            method="deployment subjects held out of the refit: mapped source vs native target, both orders",
        )
        calibration = subject_bootstrap(
            calibration, scores, labels, held_pairs, held_part.identities, seed=plan.seed
        )
    else:
        fallback = cross_fitted_calibration(
            train,
            s,
            t,
            method if method != DeploymentAdapter.method else "ridge",
            augmentations,
            seed=plan.seed,
        )
        calibration = fallback.model_copy(
            update={
                "method": f"FALLBACK (only {held_subjects} held-out deployment subjects, "
                f"{int(labels.sum())} genuine pairs): {fallback.method}"
            }
        )
    split = SplitSizes(
        *(len(np.unique(p.identities)) for p in (fit_part, val_part, held_part)),
        *(len(p) for p in (fit_part, val_part, held_part)),
    )
    mapped_calibration = calibrate(
        mapped_scores[mapped_labels],
        mapped_scores[~mapped_labels],
        dataset=f"{DEPLOYMENT} (held-out subjects)",
        images=len(held_part),
        identities=held_subjects,
        method="deployment subjects held out of the refit: mapped vs mapped",
    )
    fitted = _fitted_map(
        estimator,
        method,
        selection,
        train,
        held_part,
        (source, target),
        quality,
        MapCalibration(cross=calibration, mapped=mapped_calibration),
        plan,
    )
    fitted.confidence = _confidence(np.asarray(raw_held, np.float32), held_part, s, t)
    return RefitResult(method, choice, selection, before, after, calibration, enough, split, fitted)


def _confidence(raw: np.ndarray, held: Population, source: str, target: str) -> ConfidenceModel | None:
    """The per-template confidence predictor, learned on the held-out subjects' rows (never in the
    map's fit; `raw`: their translation before normalisation); None when they are too few."""
    actual = np.sum(l2_normalize(raw) * held.clean[target], axis=1)
    try:
        return ConfidenceModel().fit(held.clean[source], raw, actual, held.identities)
    except ValueError:
        return None


def subject_bootstrap(
    calibration: Calibration,
    scores: np.ndarray,
    labels: np.ndarray,
    pairs: PairSample,
    identities: np.ndarray,
    draws: int = 400,
    seed: int = 0,
) -> Calibration:
    """`calibration` with each threshold's `far_range` from a bootstrap over subjects.

    The Clopper-Pearson interval counts impostor pairs as independent, but on a few dozen people the
    FAR mostly depends on which people they are: resampling the subjects (each impostor pair weighted
    by how often both of its subjects were drawn) gives the spread a new set of people would see.
    """
    subject = np.unique(identities, return_inverse=True)[1]
    left = np.r_[subject[pairs.left], subject[pairs.left]][~labels]
    right = np.r_[subject[pairs.right], subject[pairs.right]][~labels]
    impostor = scores[~labels]
    accepted = {name: impostor >= t.threshold for name, t in calibration.thresholds.items()}
    rng = np.random.default_rng(seed)
    people = int(subject.max()) + 1
    fars: dict[str, list[float]] = {name: [] for name in accepted}
    for _ in range(draws):
        counts = np.bincount(rng.integers(0, people, people), minlength=people).astype(np.float32)
        weight = counts[left] * counts[right]
        total = float(weight.sum())
        for name, passed in accepted.items():
            fars[name].append(float(weight[passed].sum()) / total if total else 0.0)
    note = (
        f"95% subject bootstrap over the {people} held-out deployment subjects: where this FAR lies "
        "for another draw of the same population's people"
    )
    thresholds = {
        name: threshold.model_copy(
            update={
                "far_range": (float(np.quantile(fars[name], 0.025)), float(np.quantile(fars[name], 0.975))),
                "far_range_note": note,
            }
        )
        for name, threshold in calibration.thresholds.items()
    }
    return calibration.model_copy(update={"thresholds": thresholds})


def _heldout_quality(
    raw_mapped: np.ndarray,
    held: Population,
    source: str,
    target: str,
    pairs: PairSample,
    cross: PopulationMetrics,
    moved: PopulationMetrics,
) -> MapQuality:
    """Quality on the held-out rows from their translation before normalisation (`raw_mapped`) and
    the cross and mapped-vs-mapped metrics already measured on them."""
    raw = np.asarray(raw_mapped, np.float64)
    truth = held.clean[target].astype(np.float64)
    mapped = l2_normalize(raw)
    native = {m: measure(*pair_scores(held.clean[m], held.clean[m], pairs)) for m in (source, target)}
    return MapQuality(
        mean_cosine=float(np.mean(np.sum(mapped * truth, axis=1))),
        r2=float(1.0 - ((raw - truth) ** 2).sum() / ((truth - truth.mean(axis=0)) ** 2).sum()),
        accuracy_source_native=native[source].accuracy,
        accuracy_target_native=native[target].accuracy,
        accuracy_mapped=moved.accuracy,
        accuracy_cross=cross.accuracy,
        verification_pairs=cross.genuine_pairs + cross.impostor_pairs,
    )


def _fitted_map(
    estimator: Any,
    method: str,
    selection: dict[str, float],
    train: Population,
    held: Population,
    spaces: tuple[SpaceRef, SpaceRef],
    quality: MapQuality,
    calibration: MapCalibration,
    plan: RefitPlan,
) -> FittedBankMap:
    source, target = spaces
    chosen = ", ".join(f"{m} {v:.4f}" for m, v in selection.items()) or "one method given"
    meta = MapMetadata(
        source=source,
        target=target,
        method=method,
        params=estimator.get_params(),
        fitted=_fitted_scalars(estimator) if not isinstance(estimator, DeploymentAdapter) else {},
        provenance=FitProvenance(
            dataset=train.name,
            images=len(train),
            identities=len(np.unique(train.identities)),
            heldout_images=len(held),
            heldout_identities=len(np.unique(held.identities)),
            pairing="same capture through both models: base photos plus the deployment's recorded pairs; "
            "deployment subjects split fit / validation / held-out by a hash of their id",
            seed=plan.seed,
            selection=f"the refit with the best accuracy + TAR@FAR 1e-3 on validation deployment subjects: "
            f"{chosen}",
        ),
        quality=quality,
        calibration=calibration,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        code_version=__version__,
    )
    affine: Any = estimator  # every refit ends with an affine part (coef_, intercept_)
    weight = np.asarray(affine.coef_, np.float32)
    bias = np.asarray(affine.intercept_, np.float32)
    residual = estimator.residual if isinstance(estimator, DeploymentAdapter) else _residual(estimator)
    return FittedBankMap(meta, weight, bias, residual)


def format_result(result: RefitResult, source: str, target: str) -> str:
    """The before/after table a refit prints."""
    lines = [
        f"refit {source} -> {target}: {result.choice}"
        + (
            f" (validation: {', '.join(f'{m} {v:.4f}' for m, v in result.selection.items())})"
            if result.selection
            else ""
        ),
        f"deployment subjects: fit {result.split.fit_subjects} ({result.split.fit_rows} pairs), "
        f"validation {result.split.validation_subjects} ({result.split.validation_rows}), "
        f"held-out {result.split.heldout_subjects} ({result.split.heldout_rows})",
        "| on held-out deployment subjects | accuracy (%) | TAR@FAR 1e-3 (%) | TAR@FAR 1e-4 (%) |",
        "|---|---:|---:|---:|",
    ]
    rows: Sequence[tuple[str, PopulationMetrics | None]] = (
        ("current map", result.before),
        ("refitted", result.after),
    )
    for name, metrics in rows:
        if metrics is not None:
            lines.append(
                f"| {name} | {metrics.accuracy * 100:.2f} | {metrics.tar_far_1e3 * 100:.2f} "
                f"| {metrics.tar_far_1e4 * 100:.2f} |"
            )
    where = (
        "the held-out deployment subjects" if result.calibrated_on_deployment else "the base data (FALLBACK)"
    )
    lines.append(f"thresholds calibrated on {where}")
    lines.append("better than the current map: " + ("yes" if result.improved else "no"))
    return "\n".join(lines)
