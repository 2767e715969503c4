"""Fitting a map between two spaces from corresponding embeddings, with held-out evaluation.

Identities are split before anything is fitted: the map (and any cross-validated hyperparameter) sees
only the fitting identities; quality and thresholds are measured on the held-out identities only, and
the map's per-template confidence predictor (facebridge/mapping/confidence.py) is learned on them too:
the shipped map is the one fitted without them, so their translations are exactly what it does to people
it never saw.

`method="auto"` chooses the method as the shipped bank does (facebridge/mapping/bank_fit.py): the bank's
candidates (ridge and the residual MLP) are each fitted on the fitting identities less a validation 15% of
them (the bank's `split_groups` split, fraction and seed) and ranked by accuracy plus TAR at FAR 1e-3 of
mapped source against native target on those validation identities; the winner is then fitted on all
the fitting identities. The held-out identities take no part in the choice, so the quality recorded for
the winner is as honest as for a method named beforehand.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np

from facebridge import __version__
from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.metrics import ten_fold_accuracy
from facebridge.evaluation.verification import balanced_accuracy, pair_scores, tar_at, verification_pairs
from facebridge.linalg import l2_normalize
from facebridge.mapping.calibration import (
    HELDOUT_CROSS_METHOD,
    HELDOUT_MAPPED_METHOD,
    Calibration,
    calibrate,
    genuine_impostor_scores,
)
from facebridge.mapping.confidence import MIN_ROWS, ConfidenceModel
from facebridge.mapping.estimators import row_cosine
from facebridge.mapping.mapfile import (
    ConfidenceTensors,
    FitProvenance,
    MapCalibration,
    MapMetadata,
    MapQuality,
    ResidualTensors,
    SpaceRef,
)
from facebridge.mapping.methods import SHIPPABLE, MapEstimator, make_map
from facebridge.mapping.residual import ResidualMLPMap, split_groups

AUTO = "auto"
# the bank's selection (facebridge/mapping/bank_fit.py BankRecipe, population_study.validation_scores and
# selection_score); tests/test_fit_real.py checks these against it
SELECTION_CANDIDATES: tuple[str, ...] = ("ridge", ResidualMLPMap.method)
SELECTION_FRACTION = 0.15
SELECTION_IMPOSTORS = 500_000
SELECTION_CRITERION = "accuracy + TAR@FAR 1e-3 (cross)"
MIN_GENUINE_PAIRS = 50  # fewer, and some of the accuracy's 10 folds may hold none: rank by cosine instead
# fitted state stored as tensors, not in the metadata's `fitted`
_TENSOR_STATE = ("coef_", "intercept_", "in_weight_", "in_bias_", "out_weight_", "out_bias_")


@dataclass
class PairedEmbeddings:
    """Rows i of `source` and `target` are the same image seen by two models."""

    source: np.ndarray
    target: np.ndarray
    identities: np.ndarray
    source_space: SpaceRef
    target_space: SpaceRef
    dataset: str = "custom"
    labelled: bool = True  # False: `identities` are row numbers, so no verification pairs exist


def pair_caches(source: EmbeddingCache, target: EmbeddingCache, dataset: str = "custom") -> PairedEmbeddings:
    """Rows of images present, with a detected face, in both caches."""
    source_index, target_index = source.index(), target.index()
    common = sorted(
        p
        for p, i in source_index.items()
        if p in target_index and source.detected[i] and target.detected[target_index[p]]
    )
    if not common:
        raise ValueError("the two caches share no image with a detected face")
    s_rows = [source_index[p] for p in common]
    t_rows = [target_index[p] for p in common]

    def space(cache: EmbeddingCache) -> SpaceRef:
        meta = cache.meta
        return SpaceRef(model=str(meta["model"]), dim=int(str(meta["dim"])), sha256=str(meta["model_sha256"]))

    return PairedEmbeddings(
        source.embeddings[s_rows],
        target.embeddings[t_rows],
        source.identities[s_rows],
        space(source),
        space(target),
        dataset,
    )


def split_identities(
    identities: np.ndarray, heldout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (fit, held-out) with every identity wholly on one side.

    Only identities with two or more images can give genuine pairs, so the held-out side is drawn
    from those, in proportion `heldout_fraction` of them.
    """
    names, counts = np.unique(identities, return_counts=True)
    rng = np.random.default_rng(seed)
    multi = names[counts >= 2]
    if len(multi) < 2:  # unlabelled rows: hold out rows instead of people
        multi = names
    heldout_names = set(rng.choice(multi, size=max(2, round(len(multi) * heldout_fraction)), replace=False))
    heldout = np.array([i in heldout_names for i in identities])
    return ~heldout, heldout


def balanced_accuracy_pairs(genuine: np.ndarray, impostor: np.ndarray, seed: int) -> float:
    """LFW-style accuracy: as many impostor as genuine pairs, threshold chosen by 10-fold CV."""
    rng = np.random.default_rng(seed)
    n = min(len(genuine), len(impostor))
    scores = np.r_[rng.choice(genuine, n, replace=False), rng.choice(impostor, n, replace=False)]
    labels = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    folds = rng.permutation(np.arange(2 * n) % 10)
    return ten_fold_accuracy(scores, labels, folds).mean


def r2_score(predicted: np.ndarray, truth: np.ndarray) -> float:
    residual = ((truth - predicted) ** 2).sum()
    total = ((truth - truth.mean(axis=0)) ** 2).sum()
    return float(1.0 - residual / total)


@dataclass(frozen=True)
class CandidateScore:
    """One candidate method on the validation identities (accuracy and TAR None without labels)."""

    method: str
    score: float  # what ranks the candidates (Selection.criterion)
    mean_cosine: float
    accuracy: float | None = None
    tar_far_1e3: float | None = None


@dataclass(frozen=True)
class Selection:
    """The bank's choice of method on validation identities: every candidate scored, the best kept."""

    method: str
    candidates: tuple[CandidateScore, ...]
    criterion: str
    photos: int
    identities: int  # without identity labels: the photos (each row is its own identity)
    labelled: bool = True

    @property
    def validation(self) -> str:
        """Which rows the candidates were scored on, e.g. '80 photos of 28 validation identities'."""
        if not self.labelled:
            return f"{self.photos} validation photos"
        return f"{self.photos} photos of {self.identities} validation identities"

    def describe(self) -> str:
        """As `FitProvenance.selection` records it (the bank's wording)."""
        scores = ", ".join(f"{c.method} {c.score:.4f}" for c in self.candidates)
        return (
            f"best {self.criterion} on {self.validation} (the bank's {SELECTION_FRACTION:.0%} of the "
            f"fitting identities), used for nothing else: {scores}"
        )


def select_method(
    source: np.ndarray,
    target: np.ndarray,
    identities: np.ndarray,
    labelled: bool = True,
    candidates: tuple[str, ...] = SELECTION_CANDIDATES,
    seed: int = 0,
) -> Selection:
    """The bank's validation selection on these rows: each candidate fitted on all but a validation
    `SELECTION_FRACTION` of the identities and scored on those; the best `SELECTION_CRITERION` wins
    (first of `candidates` on a tie). Rows are unit embeddings, float32, as the bank's populations.

    Without identity labels, or with under `MIN_GENUINE_PAIRS` genuine pairs among the validation
    photos, there is no verification to score, so the candidates are ranked by mean cosine of mapped
    and true target rows instead, and the criterion says so.
    """
    # unit rows in float32, as the bank's populations hold them
    x = l2_normalize(source.astype(np.float64)).astype(np.float32)
    y = l2_normalize(target.astype(np.float64)).astype(np.float32)
    train, held = split_groups(identities, len(x), SELECTION_FRACTION, seed)
    pairs = verification_pairs(identities[held], SELECTION_IMPOSTORS, seed) if labelled else None
    genuine = int(pairs.genuine.sum()) if pairs is not None else 0
    verify = pairs is not None and genuine >= MIN_GENUINE_PAIRS and not pairs.genuine.all()
    if verify:
        criterion = SELECTION_CRITERION
    else:
        why = "no identity labels" if not labelled else f"{genuine} genuine pairs among the validation photos"
        criterion = f"mean cosine of mapped and true target rows ({why}: no verification to score)"
    scored = []
    for method in candidates:
        estimator = make_map(method)
        estimator.fit(x[train], y[train], identities[train])
        mapped = l2_normalize(estimator.transform(x[held])).astype(np.float32)
        cosine = float(row_cosine(mapped, y[held]).mean())
        if pairs is None or not verify:
            scored.append(CandidateScore(method, cosine, cosine))
            continue
        scores, labels = pair_scores(mapped, y[held], pairs)
        accuracy = balanced_accuracy(scores, labels)
        tar = tar_at(scores[labels], scores[~labels], 1e-3)
        scored.append(CandidateScore(method, accuracy + tar, cosine, accuracy, tar))
    best = max(scored, key=lambda c: c.score)  # the first of equals, as the bank's max over its methods
    return Selection(
        best.method, tuple(scored), criterion, int(held.sum()), len(np.unique(identities[held])), labelled
    )


@dataclass
class FittedMap:
    meta: MapMetadata
    weight: np.ndarray
    bias: np.ndarray
    estimator: MapEstimator
    confidence: ConfidenceModel | None = None  # None: too few held-out rows to learn one
    residual: ResidualTensors | None = None  # the residual MLP of a `residual-mlp` map
    selection: Selection | None = None  # how method="auto" chose

    @property
    def confidence_tensors(self) -> ConfidenceTensors | None:
        """The predictor as `save_map` stores it (its provenance is `meta.confidence`)."""
        return self.confidence.tensors() if self.confidence is not None else None


def fit_map(
    data: PairedEmbeddings,
    method: str = "ridge",
    params: dict[str, Any] | None = None,
    heldout_fraction: float = 0.25,
    seed: int = 0,
) -> FittedMap:
    """Fit source→target on the fitting identities; measure and calibrate on the held-out ones.

    `method` is any method a map file can hold (`SHIPPABLE`), or "auto": the bank's validation
    selection among `SELECTION_CANDIDATES`, on the fitting identities only (`select_method`).
    `params` are the method's constructor keywords (none with "auto": each candidate as the bank fits it).
    """
    params = params or {}
    x, y = l2_normalize(data.source.astype(np.float64)), l2_normalize(data.target.astype(np.float64))
    fit_rows, held_rows = split_identities(data.identities, heldout_fraction, seed)
    selection = None
    if method == AUTO:
        if params:
            raise ValueError(f"params {sorted(params)} need a named method, not {AUTO!r}")
        selection = select_method(
            data.source[fit_rows], data.target[fit_rows], data.identities[fit_rows], data.labelled, seed=seed
        )
        method = selection.method
    if method not in SHIPPABLE:
        raise ValueError(
            f"method {method!r} cannot be stored in a map file; choose from {', '.join(SHIPPABLE)}"
        )
    estimator = make_map(method, **params)
    estimator.fit(x[fit_rows], y[fit_rows], data.identities[fit_rows])

    xh, yh, ids = x[held_rows], y[held_rows], data.identities[held_rows]
    raw = estimator.transform(xh)
    mapped = l2_normalize(raw)
    fidelity = row_cosine(mapped, yh)
    quality = MapQuality(mean_cosine=float(fidelity.mean()), r2=r2_score(raw, yh))
    confidence = None
    if len(yh) >= MIN_ROWS:
        confidence = ConfidenceModel(random_state=seed).fit(xh, raw, fidelity, ids)
    calibration = None
    if data.labelled:
        quality, calibration = _verification(quality, xh, yh, mapped, ids, seed, data.dataset)
    fitted = {
        k: _jsonable(v) for k, v in vars(estimator).items() if k.endswith("_") and k not in _TENSOR_STATE
    }
    meta = MapMetadata(
        source=data.source_space,
        target=data.target_space,
        method=method,
        params=estimator.get_params(),
        fitted=fitted,
        provenance=FitProvenance(
            dataset=data.dataset,
            images=int(fit_rows.sum()),
            identities=len(np.unique(data.identities[fit_rows])),
            heldout_images=int(held_rows.sum()),
            heldout_identities=len(np.unique(ids)),
            pairing="same image through both models",
            seed=seed,
            selection=selection.describe() if selection is not None else None,
        ),
        quality=quality,
        calibration=calibration,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        code_version=__version__,
        confidence=confidence.info(
            "held-out identities (the ones quality is measured on), translated by the shipped map"
        )
        if confidence is not None
        else None,
    )
    affine: Any = estimator  # every shippable method ends with an affine part (coef_, intercept_)
    return FittedMap(
        meta,
        np.asarray(affine.coef_, np.float32),
        np.asarray(affine.intercept_, np.float32),
        estimator,
        confidence,
        _residual(estimator),
        selection,
    )


def _residual(estimator: MapEstimator) -> ResidualTensors | None:
    """The residual MLP's tensors as the map file stores them; None for an affine method."""
    if not isinstance(estimator, ResidualMLPMap):
        return None
    return ResidualTensors(
        estimator.in_weight_, estimator.in_bias_, estimator.out_weight_, estimator.out_bias_
    ).as_float32()


def _verification(
    quality: MapQuality,
    xh: np.ndarray,
    yh: np.ndarray,
    mapped: np.ndarray,
    ids: np.ndarray,
    seed: int,
    dataset: str,
) -> tuple[MapQuality, MapCalibration]:
    """Held-out verification accuracy natively, mapped-to-mapped and cross, and the calibrations."""
    scores = {
        "source": genuine_impostor_scores(xh, xh, ids),
        "target": genuine_impostor_scores(yh, yh, ids),
        "mapped": genuine_impostor_scores(mapped, mapped, ids),
        # cross comparisons are asymmetric (mapped probe vs native reference): use both triangles
        "cross": _both_orders(mapped, yh, ids),
    }
    accuracy = {k: balanced_accuracy_pairs(g, i, seed) for k, (g, i) in scores.items()}
    quality = quality.model_copy(
        update={
            "accuracy_source_native": accuracy["source"],
            "accuracy_target_native": accuracy["target"],
            "accuracy_mapped": accuracy["mapped"],
            "accuracy_cross": accuracy["cross"],
            "verification_pairs": 2 * min(len(scores["cross"][0]), len(scores["cross"][1])),
        }
    )
    calibration = MapCalibration(
        cross=_held_out_calibration(scores["cross"], dataset, ids, HELDOUT_CROSS_METHOD),
        mapped=_held_out_calibration(scores["mapped"], dataset, ids, HELDOUT_MAPPED_METHOD),
    )
    return quality, calibration


def _held_out_calibration(
    scores: tuple[np.ndarray, np.ndarray], dataset: str, ids: np.ndarray, method: str
) -> Calibration:
    """Thresholds on the held-out identities, naming them so a caller can judge the population."""
    genuine, impostor = scores
    return calibrate(
        genuine, impostor, dataset=dataset, images=len(ids), identities=len(np.unique(ids)), method=method
    )


def _both_orders(left: np.ndarray, right: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g1, i1 = genuine_impostor_scores(left, right, ids)
    g2, i2 = genuine_impostor_scores(right, left, ids)
    return np.r_[g1, g2], np.r_[i1, i2]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# The bank's validation metrics, as facebridge/evaluation/population.py computes them (verification_pairs,
# pair_scores, balanced_accuracy, tar_at): that module imports the vision stack, and with it onnxruntime,
# through facebridge.dataset_embedding, and fitting from .npy files must work without an ONNX Runtime.
# tests/test_fit_real.py checks that `select_method` scores exactly as population_study.validation_scores.
