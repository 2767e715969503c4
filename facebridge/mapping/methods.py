"""Every way facebridge can fit a map, by name: the affine estimators and the nonlinear ones.

Affine methods end as one (coef_, intercept_); `residual-mlp` adds four tensors that the map file
stores and the service applies with numpy; `random-features` is a study baseline that is never shipped.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from facebridge.mapping.estimators import ESTIMATORS
from facebridge.mapping.nonlinear import RandomFeatureMap
from facebridge.mapping.residual import ResidualMLPMap


class MapEstimator(Protocol):
    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Any: ...

    def transform(self, x: np.ndarray) -> np.ndarray: ...

    def get_params(self) -> dict[str, Any]: ...


NONLINEAR: dict[str, type] = {
    ResidualMLPMap.method: ResidualMLPMap,
    RandomFeatureMap.method: RandomFeatureMap,
}
METHODS: tuple[str, ...] = (*ESTIMATORS, *NONLINEAR)
SHIPPABLE: tuple[str, ...] = (*ESTIMATORS, ResidualMLPMap.method)


def make_map(method: str, **params: Any) -> MapEstimator:
    """An unfitted estimator of `method` with `params` (its constructor's keywords)."""
    if method in ESTIMATORS:
        return ESTIMATORS[method](**params)
    if method in NONLINEAR:
        return NONLINEAR[method](**params)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
