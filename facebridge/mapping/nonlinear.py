"""A nonlinear map for comparison: ridge on the input plus random Fourier features of it.

Random Fourier features approximate an RBF kernel, so this is kernel ridge regression at linear cost.
It cannot be stored as one (W, b), so the bank only ships it if it measurably beats the affine maps;
the evaluation report says whether it does.
"""

from __future__ import annotations

from typing import Self

import numpy as np

from facebridge.mapping.estimators import ParamsFromInit, RidgeMap, check_is_fitted


class RandomFeatureMap(ParamsFromInit):
    """y ≈ ridge([x, sqrt(2/H) cos(gamma x Ω + φ)]), Ω ~ N(0, 1), φ ~ U(0, 2π)."""

    method = "random-features"

    def __init__(self, n_features: int = 1024, gamma: float = 1.5, random_state: int = 0):
        self.n_features = n_features
        self.gamma = gamma
        self.random_state = random_state

    def _features(self, x: np.ndarray) -> np.ndarray:
        waves = np.cos(self.gamma * (x @ self.omega_) + self.phase_)
        return np.hstack([x, np.sqrt(2.0 / self.n_features) * waves])

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Self:
        rng = np.random.default_rng(self.random_state)
        self.omega_ = rng.normal(size=(x.shape[1], self.n_features))
        self.phase_ = rng.uniform(0, 2 * np.pi, self.n_features)
        self.ridge_ = RidgeMap(cv=3, random_state=self.random_state).fit(self._features(x), y, groups)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "ridge_")
        return self.ridge_.transform(self._features(np.asarray(x, dtype=np.float64)))
