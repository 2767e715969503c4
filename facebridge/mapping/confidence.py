"""Per-template confidence of a translated template: how well one map carried one photo's template.

A map is good on average (its recorded mean cosine) but not equally good on every template; an
identity system that migrates a gallery wants to know which translated templates to trust least, to
re-enrol those people first or hold them to a stricter threshold (the backfilling idea of FastFill,
ICLR 2023). `ConfidenceModel` predicts, per row, the expected cosine between the translated template
and the target model's own embedding of the same photo.

Features (all available while the map is applied, so serving costs about d_source + d_target flops a
row on top of the map): the source template x, the translated unit template r/|r|, and the norm |r| of
the map's raw output before L2 normalisation (and its square). The raw norm carries most of the signal:
a regression map shrinks its output toward the mean where the source template tells it little about
the target. The model is ridge regression on the standardised features (penalty chosen by grouped
cross-validation, folds by identity; the two norm features are left unpenalised, so a small or shifted
fitting set shrinks toward "the raw norm alone" rather than toward a constant), folded back into one
weight vector per feature group, so the
predictor is stored as four small tensors in the map file (facebridge/mapping/mapfile.py) and served
with numpy. It must be fitted on held-out pairs only: rows translated by a map that never saw their
identity (out-of-fold maps of a cross-fit, or a held-out split), or it learns the fitting rows' optimism.
"""

from __future__ import annotations

from typing import Self

import numpy as np

from facebridge.mapping.estimators import ParamsFromInit, group_folds
from facebridge.mapping.mapfile import CONFIDENCE_NORM_FEATURES, ConfidenceInfo, ConfidenceTensors

MIN_ROWS = 50  # fewer held-out rows than this fit no predictor
UNPENALISED = 1e4  # the norm columns are scaled by this inside the ridge: their penalty is ~1e-8 of the rest


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties), numpy only."""
    return float(np.corrcoef(_ranks(np.asarray(a)), _ranks(np.asarray(b)))[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if (counts > 1).any():  # ties share their mean rank
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    return ranks


def split_raw(mapped_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows, norms) of a map's raw output."""
    norms = np.maximum(np.linalg.norm(mapped_raw, axis=1), np.finfo(np.float32).tiny)
    return mapped_raw / norms[:, None], norms


def expected_cosine(
    tensors: ConfidenceTensors, source: np.ndarray, unit: np.ndarray, norms: np.ndarray
) -> np.ndarray:
    """The stored predictor on (source rows, unit translated rows, raw norms): float32, in [-1, 1]."""
    out = source @ tensors.source_weight
    out += unit @ tensors.target_weight
    out += norms * tensors.norm_weight[0] + (norms * norms) * tensors.norm_weight[1] + tensors.bias[0]
    return np.clip(out, -1.0, 1.0, out=out).astype(np.float32, copy=False)


def _features(source: np.ndarray, mapped_raw: np.ndarray) -> np.ndarray:
    unit, norms = split_raw(np.asarray(mapped_raw, np.float64))
    return np.hstack([np.asarray(source, np.float64), unit, norms[:, None], (norms**2)[:, None]])


class ConfidenceModel(ParamsFromInit):
    """Ridge regression of a map's per-row fidelity on (source, translated unit row, raw norm, norm²).

    fit(source_embeddings, mapped_raw, actual_cosine, groups): `mapped_raw` is the map's output before
    L2 normalisation for held-out rows, `actual_cosine` its cosine with the true target embedding;
    `groups` (identities) keep each person in one cross-validation fold. predict(...) gives the
    expected cosine per row, clipped to [-1, 1].
    """

    def __init__(
        self,
        alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0),
        cv: int = 5,
        random_state: int = 0,
    ):
        self.alphas = alphas
        self.cv = cv
        self.random_state = random_state

    def fit(
        self,
        source_embeddings: np.ndarray,
        mapped_raw: np.ndarray,
        actual_cosine: np.ndarray,
        groups: np.ndarray | None = None,
    ) -> Self:
        z = _features(source_embeddings, mapped_raw)
        y = np.asarray(actual_cosine, np.float64)
        if z.ndim != 2 or len(z) != len(y) or len(y) < MIN_ROWS:
            raise ValueError(f"need at least {MIN_ROWS} aligned rows, got features {z.shape}, y {y.shape}")
        self.d_source_ = int(np.asarray(source_embeddings).shape[1])
        alphas = np.asarray(self.alphas, np.float64)
        folds = group_folds(len(y), groups, self.cv, self.random_state)
        held_out = np.zeros((len(alphas), len(y)))
        for held in folds:
            train = np.ones(len(y), bool)
            train[held] = False
            for i, (weights, bias) in enumerate(_ridge_path(z[train], y[train], alphas)):
                held_out[i, held] = z[held] @ weights + bias
        errors = ((np.clip(held_out, -1, 1) - y) ** 2).mean(axis=1)
        best = int(np.argmin(errors))
        self.alpha_ = float(alphas[best])
        self.cv_mse_ = float(errors[best])
        self.cv_spearman_ = rank_correlation(held_out[best], y)
        self.rows_ = len(y)
        self.identities_ = len(np.unique(groups)) if groups is not None else len(y)
        self.mean_actual_ = float(y.mean())
        weights, self.intercept_ = _ridge_path(z, y, alphas[best : best + 1])[0]
        d = self.d_source_
        self.source_coef_ = weights[:d]
        self.target_coef_ = weights[d:-2]
        self.norm_coef_ = weights[-2:]
        return self

    def predict(self, source_embeddings: np.ndarray, mapped_raw: np.ndarray) -> np.ndarray:
        z = _features(source_embeddings, mapped_raw)
        weights = np.r_[self.source_coef_, self.target_coef_, self.norm_coef_]
        return np.asarray(np.clip(z @ weights + self.intercept_, -1.0, 1.0))

    def tensors(self) -> ConfidenceTensors:
        """The fitted predictor as stored in a map file (float32)."""
        return ConfidenceTensors(
            self.source_coef_, self.target_coef_, self.norm_coef_, np.array([self.intercept_])
        ).as_float32()

    def info(self, heldout: str) -> ConfidenceInfo:
        """Provenance for the map's metadata; `heldout` says how the rows were kept from the map."""
        return ConfidenceInfo(
            features=["source embedding", "translated unit embedding", *CONFIDENCE_NORM_FEATURES, "bias"],
            rows=self.rows_,
            identities=self.identities_,
            heldout=heldout,
            alpha=self.alpha_,
            spearman=round(self.cv_spearman_, 4),
            mean_actual=round(self.mean_actual_, 4),
        )


def _ridge_path(z: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Ridge on standardised columns (penalty alpha x rows; the last two, the norm features, nearly
    free) for each alpha, from one eigendecomposition; each solution folded back to weights on the raw
    columns and an intercept."""
    mean, scale = z.mean(axis=0), z.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    scale[-2:] /= UNPENALISED  # a column scaled up by k costs k^2 less penalty for the same fit
    standard = (z - mean) / scale
    values, vectors = np.linalg.eigh(standard.T @ standard)
    projected = vectors.T @ (standard.T @ (y - y.mean()))
    solutions = []
    for alpha in alphas:
        weights = vectors @ (projected / (values + alpha * len(y))) / scale
        solutions.append((weights, float(y.mean() - mean @ weights)))
    return solutions
