"""Estimators of affine maps y ≈ x @ coef_ + intercept_ from one embedding space into another.

scikit-learn style: hyperparameters in the constructor, `fit(X, Y, groups)` learns state ending in `_`,
`transform(X)` applies it. Every method ends as the same (coef_, intercept_) pair, so a fitted map is
stored and served the same way whatever produced it. Inputs are expected L2-normalised.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Self

import numpy as np

from facebridge.exceptions import FacebridgeError
from facebridge.mapping.optim import Adam


class NotFittedError(FacebridgeError, AttributeError):
    """transform() before fit(): the estimator has learnt nothing yet (scikit-learn's name for it)."""


def check_is_fitted(estimator: object, attribute: str) -> None:
    """NotFittedError unless `fit` has set `attribute` (a name ending in `_`)."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet: call fit(X, Y) first")


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    return x


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows."""
    num = np.einsum("ij,ij->i", a, b)
    return num / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


class ParamsFromInit:
    """`get_params()` read off the constructor's signature, as scikit-learn does: every estimator
    stores its constructor arguments under the same names, so listing them by hand would only drift."""

    def get_params(self) -> dict[str, Any]:
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        parameters = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in parameters if p.name != "self" and p.kind in named]
        values = {n: getattr(self, n) for n in names}
        return {n: list(v) if isinstance(v, tuple) else v for n, v in values.items()}


class AffineMapEstimator(ParamsFromInit):
    """Base class: holds the fitted (coef_, intercept_) and applies them."""

    method: ClassVar[str] = "base"
    coef_: np.ndarray
    intercept_: np.ndarray

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Self:
        x, y = _as_2d(x, "X"), _as_2d(y, "Y")
        if len(x) != len(y):
            raise ValueError(f"X has {len(x)} rows, Y has {len(y)}")
        self._fit(x, y, groups)
        return self

    def _fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> None:
        raise NotImplementedError

    def transform(self, x: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_


class LeastSquaresMap(AffineMapEstimator):
    """Plain linear least squares through the origin: y = x W."""

    method = "lstsq"

    def _fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> None:
        self.coef_ = np.linalg.lstsq(x, y, rcond=None)[0]
        self.intercept_ = np.zeros(y.shape[1])


class AffineLeastSquaresMap(AffineMapEstimator):
    """Unregularised least squares with a bias: y = x W + b."""

    method = "affine"

    def _fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> None:
        mx, my = x.mean(axis=0), y.mean(axis=0)
        self.coef_ = np.linalg.lstsq(x - mx, y - my, rcond=None)[0]
        self.intercept_ = my - mx @ self.coef_


def _ridge_solutions(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> list[np.ndarray]:
    """Ridge coefficients for several alphas from one eigendecomposition of the centred inputs' Gram
    matrix: W(a) = V diag(1 / (s² + a)) Vᵀ Xᵀ Y, the SVD solution without the n-by-d factor (two
    matrix products over the rows instead of a decomposition of them; seconds fewer per fit)."""
    evals, v = np.linalg.eigh(x.T @ x)
    projected = v.T @ (x.T @ y)
    return [v @ (projected / (np.maximum(evals, 0.0) + a)[:, None]) for a in alphas]


def group_folds(n: int, groups: np.ndarray | None, folds: int, seed: int) -> list[np.ndarray]:
    """Row indices per fold; rows of one group (identity) share a fold, so validation is on unseen people."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return [f for f in np.array_split(rng.permutation(n), folds)]
    names = np.unique(groups)
    assignment = dict(zip(names, rng.permutation(len(names)) % folds, strict=True))
    fold_of_row = np.array([assignment[g] for g in groups])
    return [np.nonzero(fold_of_row == f)[0] for f in range(folds)]


class RidgeMap(AffineMapEstimator):
    """Ridge regression with a bias; alpha picked by grouped cross-validation on mapped-vs-true cosine."""

    method = "ridge"

    def __init__(
        self,
        alphas: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0),
        cv: int = 5,
        random_state: int = 0,
    ):
        self.alphas = alphas
        self.cv = cv
        self.random_state = random_state

    def _fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> None:
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if len(alphas) == 1:
            self.alpha_ = float(alphas[0])
            self.cv_scores_ = np.array([np.nan])
        else:
            scores = np.zeros(len(alphas))
            for held in group_folds(len(x), groups, self.cv, self.random_state):
                train = np.ones(len(x), bool)
                train[held] = False
                mx, my = x[train].mean(axis=0), y[train].mean(axis=0)
                for i, w in enumerate(_ridge_solutions(x[train] - mx, y[train] - my, alphas)):
                    pred = (x[held] - mx) @ w + my
                    scores[i] += row_cosine(pred, y[held]).sum()
            self.cv_scores_ = scores / len(x)
            self.alpha_ = float(alphas[int(np.argmax(scores))])
        mx, my = x.mean(axis=0), y.mean(axis=0)
        self.coef_ = _ridge_solutions(x - mx, y - my, np.array([self.alpha_]))[0]
        self.intercept_ = my - mx @ self.coef_


def _pca_basis(z: np.ndarray, dim: int) -> np.ndarray:
    """Top `dim` principal directions (columns) of centred data."""
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    return vt[:dim].T


class ProcrustesMap(AffineMapEstimator):
    """Orthogonal Procrustes with a global scale, y = s (x - mx) P_x R P_yᵀ + my.

    When the dimensions differ, both sides are first projected by PCA to the smaller dimension (or
    `n_components`), so the rotation R is square; the composed map is still one affine (W, b).
    """

    method = "procrustes"

    def __init__(self, n_components: int | None = None, scale: bool = True):
        self.n_components = n_components
        self.scale = scale

    def _fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> None:
        mx, my = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - mx, y - my
        dim = self.n_components or min(x.shape[1], y.shape[1], len(x))
        px = np.eye(x.shape[1]) if dim == x.shape[1] else _pca_basis(xc, dim)
        py = np.eye(y.shape[1]) if dim == y.shape[1] else _pca_basis(yc, dim)
        xp, yp = xc @ px, yc @ py
        u, s, vt = np.linalg.svd(xp.T @ yp)
        rotation = u @ vt
        self.scale_ = float(s.sum() / (xp**2).sum()) if self.scale else 1.0
        self.coef_ = self.scale_ * px @ rotation @ py.T
        self.intercept_ = my - mx @ self.coef_


class IdentitySoftmaxMap(AffineMapEstimator):
    """A discriminative affine map: ridge start, then trained so mapped rows classify their identity.

    Regression alone spends capacity on everything in the target embedding, image nuisance included.
    Verification needs only that a mapped probe lands nearer its own person's target embeddings than
    anyone else's, so this minimises a scaled-cosine softmax over identity centroids in the target space
    (every identity of the fitting rows: people seen once are the impostors that matter most), plus
    `regression_weight` times the squared distance to the row's own target embedding, with Adam.
    The result is still one (coef_, intercept_) pair, so it is stored and served like any other map.
    """

    method = "softmax"

    def __init__(
        self,
        steps: int = 60,
        learning_rate: float = 3e-3,
        scale: float = 30.0,
        regression_weight: float = 1.0,
        min_rows_per_identity: int = 1,
        random_state: int = 0,
    ):
        self.min_rows_per_identity = min_rows_per_identity
        self.steps = steps
        self.learning_rate = learning_rate
        self.scale = scale
        self.regression_weight = regression_weight
        self.random_state = random_state

    def _fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> None:
        start = RidgeMap(random_state=self.random_state).fit(x, y, groups)
        self.alpha_ = start.alpha_
        weight = np.vstack([start.coef_, start.intercept_[None]]).astype(np.float32)
        if groups is None:
            self.coef_, self.intercept_ = start.coef_, start.intercept_
            return
        names, row_class, counts = np.unique(groups, return_inverse=True, return_counts=True)
        classed = counts[row_class] >= self.min_rows_per_identity
        kept = np.unique(row_class[classed])
        if len(kept) < 2:
            self.coef_, self.intercept_ = start.coef_, start.intercept_
            return
        new_index = -np.ones(len(names), int)
        new_index[kept] = np.arange(len(kept))
        labels = new_index[row_class[classed]]
        y32 = y.astype(np.float32)
        centroids = np.zeros((len(kept), y.shape[1]), np.float32)
        np.add.at(centroids, labels, y32[classed])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        xa = np.hstack([x, np.ones((len(x), 1))]).astype(np.float32)
        adam = Adam([weight], self.learning_rate)
        n = float(len(x))
        for _ in range(self.steps):
            z = xa @ weight
            norm = np.linalg.norm(z, axis=1, keepdims=True)
            zn = z / norm
            logits = self.scale * (zn[classed] @ centroids.T)
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(labels)), labels] -= 1.0
            grad_zn = self.regression_weight * (zn - y32) / n
            grad_zn[classed] += self.scale * (p @ centroids) / n
            grad_z = (grad_zn - zn * (grad_zn * zn).sum(axis=1, keepdims=True)) / norm
            adam.step([xa.T @ grad_z])
        self.identities_ = len(kept)
        # only directions were trained; rescale so mapped rows have unit length on average (as targets do)
        weight /= float(np.linalg.norm(xa @ weight, axis=1).mean())
        self.coef_ = weight[:-1].astype(np.float64)
        self.intercept_ = weight[-1].astype(np.float64)


class LowRankRidgeMap(AffineMapEstimator):
    """Reduced-rank ridge: the ridge map's fitted values projected on their top `rank` directions.

    Two face spaces share a few hundred informative directions at most; a full d_source x d_target
    matrix fitted on a narrow population also learns that population's idiosyncrasies in the weak
    directions. With `rank=None` the rank is chosen by grouped cross-validation among `ranks`.
    """

    method = "lowrank"

    def __init__(
        self,
        rank: int | None = None,
        ranks: tuple[int, ...] = (32, 48, 64, 96, 128),
        cv: int = 3,
        random_state: int = 0,
    ):
        self.rank = rank
        self.ranks = ranks
        self.cv = cv
        self.random_state = random_state

    @staticmethod
    def _reduce(ridge: RidgeMap, x: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
        fitted = (x - x.mean(axis=0)) @ ridge.coef_
        _, _, vt = np.linalg.svd(fitted, full_matrices=False)
        projector = vt[:rank].T @ vt[:rank]
        coef = ridge.coef_ @ projector
        return coef, ridge.intercept_ + x.mean(axis=0) @ (ridge.coef_ - coef)

    def _fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> None:
        ridge = RidgeMap(random_state=self.random_state).fit(x, y, groups)
        self.alpha_ = ridge.alpha_
        limit = min(x.shape[1], y.shape[1])
        candidates = [r for r in self.ranks if r < limit] + [limit]
        if self.rank is not None:
            self.rank_ = min(self.rank, limit)
        else:
            scores = np.zeros(len(candidates))
            for held in group_folds(len(x), groups, self.cv, self.random_state):
                train = np.ones(len(x), bool)
                train[held] = False
                inner = RidgeMap(alphas=(self.alpha_,)).fit(x[train], y[train])
                for i, rank in enumerate(candidates):
                    coef, intercept = self._reduce(inner, x[train], rank)
                    scores[i] += row_cosine(x[held] @ coef + intercept, y[held]).sum()
            self.cv_scores_ = scores / len(x)
            self.rank_ = candidates[int(np.argmax(scores))]
        self.coef_, self.intercept_ = self._reduce(ridge, x, self.rank_)


class StandardizedProcrustesMap(AffineMapEstimator):
    """Orthogonal Procrustes between the two spaces after per-dimension standardisation.

    Standardising first stops a few high-variance dimensions from dominating the rotation; the
    rotation itself cannot overfit the way a full matrix can, which is what a small or narrow fitting
    population needs. Composed back into one affine (W, b).
    """

    method = "procrustes-std"

    def __init__(self, n_components: int | None = None):
        self.n_components = n_components

    def _fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> None:
        mx, my = x.mean(axis=0), y.mean(axis=0)
        sx, sy = np.maximum(x.std(axis=0), 1e-8), np.maximum(y.std(axis=0), 1e-8)
        inner = ProcrustesMap(self.n_components, scale=True).fit((x - mx) / sx, (y - my) / sy)
        self.scale_ = inner.scale_
        self.coef_ = (inner.coef_ / sx[:, None]) * sy[None, :]
        self.intercept_ = my - mx @ self.coef_


ESTIMATORS: dict[str, type[AffineMapEstimator]] = {
    cls.method: cls
    for cls in (
        LeastSquaresMap,
        AffineLeastSquaresMap,
        RidgeMap,
        ProcrustesMap,
        IdentitySoftmaxMap,
        LowRankRidgeMap,
        StandardizedProcrustesMap,
    )
}


def make_estimator(method: str, **params: Any) -> AffineMapEstimator:
    if method not in ESTIMATORS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(ESTIMATORS)}")
    return ESTIMATORS[method](**params)
