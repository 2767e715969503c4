"""One contract over every way facebridge fits a map (facebridge/mapping/methods.py METHODS), as
scikit-learn's `check_estimator` holds its estimators to one: constructor parameters round-trip through
`get_params`, `fit` returns the estimator and leaves its parameters alone, `transform` refuses before
`fit` and afterwards gives one finite row per input row, and the same parameters on the same rows fit
the same map."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from facebridge.mapping.estimators import NotFittedError
from facebridge.mapping.methods import METHODS, make_map

pytestmark = pytest.mark.fast

# small enough to fit in a fraction of a second; every other parameter at its default
SMALL: dict[str, dict[str, Any]] = {
    "residual-mlp": {"hidden": 64, "max_epochs": 30, "batch_size": 32, "learning_rate": 1e-2},
    "random-features": {"n_features": 64},
    "softmax": {"steps": 10},
}


def rows(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit rows of a 16-d source and a 12-d target related by a nonlinear map; 40 people, 5 rows each."""
    rng = np.random.default_rng(seed)
    people = np.repeat(np.arange(40), 5)
    x = rng.normal(size=(40, 16))[people] + 0.3 * rng.normal(size=(200, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.sin(3 * x @ rng.normal(size=(16, 12)))  # nonlinear enough that the residual MLP trains
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32), people.astype(str)


@pytest.mark.parametrize("method", METHODS)
def test_every_estimator_keeps_the_contract(method: str) -> None:
    x, y, people = rows()
    estimator = make_map(method, **SMALL.get(method, {}))
    params = estimator.get_params()
    assert make_map(method, **params).get_params() == params  # the constructor takes what get_params says

    with pytest.raises(NotFittedError, match="not fitted yet"):
        estimator.transform(x[:3])

    assert estimator.fit(x, y, people) is estimator
    assert estimator.get_params() == params  # fitting learns state ending in _, never a parameter
    mapped = estimator.transform(x[:7])
    assert mapped.shape == (7, y.shape[1]) and np.isfinite(mapped).all()

    if method == "residual-mlp":
        assert getattr(estimator, "best_epoch_", 0) > 0  # the MLP itself trained, not only its ridge start
    again = make_map(method, **params).fit(x, y, people)
    np.testing.assert_array_equal(again.transform(x[:7]), mapped)  # deterministic for given parameters


def test_an_unknown_method_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="residual-mlp"):
        make_map("no-such-method")
