"""Fitting a map between two spaces from corresponding embeddings, with held-out evaluation.

Identities are split before anything is fitted: the map (and any cross-validated hyperparameter) sees
only the fitting identities; quality and thresholds are measured on the held-out identities only, and
the map's per-template confidence predictor (facebridge/mapping/confidence.py) is learned on them too:
the shipped map is the one fitted without them, so their translations are exactly what it does to people
it never saw.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np

from facebridge import __version__
from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.metrics import ten_fold_accuracy
from facebridge.linalg import l2_normalize
from facebridge.mapping.calibration import (
    HELDOUT_CROSS_METHOD,
    HELDOUT_MAPPED_METHOD,
    Calibration,
    calibrate,
    genuine_impostor_scores,
)
from facebridge.mapping.confidence import MIN_ROWS, ConfidenceModel
from facebridge.mapping.estimators import AffineMapEstimator, make_estimator, row_cosine
from facebridge.mapping.mapfile import (
    ConfidenceTensors,
    FitProvenance,
    MapCalibration,
    MapMetadata,
    MapQuality,
    SpaceRef,
)


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


@dataclass
class FittedMap:
    meta: MapMetadata
    weight: np.ndarray
    bias: np.ndarray
    estimator: AffineMapEstimator
    confidence: ConfidenceModel | None = None  # None: too few held-out rows to learn one

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
    """Fit source→target on the fitting identities; measure and calibrate on the held-out ones."""
    params = params or {}
    x, y = l2_normalize(data.source.astype(np.float64)), l2_normalize(data.target.astype(np.float64))
    fit_rows, held_rows = split_identities(data.identities, heldout_fraction, seed)
    estimator = make_estimator(method, **params).fit(
        x[fit_rows], y[fit_rows], groups=data.identities[fit_rows]
    )

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
        k: _jsonable(v)
        for k, v in vars(estimator).items()
        if k.endswith("_") and k not in ("coef_", "intercept_")
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
    return FittedMap(
        meta,
        estimator.coef_.astype(np.float32),
        estimator.intercept_.astype(np.float32),
        estimator,
        confidence,
    )


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
