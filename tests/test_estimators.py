"""Map estimators recover known maps on synthetic data and follow the estimator conventions."""

from __future__ import annotations

import numpy as np
import pytest

from facebridge.mapping.estimators import (
    AffineLeastSquaresMap,
    LeastSquaresMap,
    ProcrustesMap,
    RidgeMap,
    group_folds,
    make_estimator,
)


@pytest.fixture
def affine_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 24))
    w = rng.normal(size=(24, 16))
    b = rng.normal(size=16)
    return x, x @ w + b, w, b


@pytest.mark.parametrize("estimator", [AffineLeastSquaresMap(), RidgeMap(alphas=(1e-8,))])
def test_recovers_a_known_affine_map(estimator, affine_data) -> None:
    x, y, w, b = affine_data
    fitted = estimator.fit(x, y)
    np.testing.assert_allclose(fitted.coef_, w, atol=1e-5)
    np.testing.assert_allclose(fitted.intercept_, b, atol=1e-5)
    np.testing.assert_allclose(fitted.transform(x), y, atol=1e-5)


def test_lstsq_is_linear_through_the_origin(affine_data) -> None:
    x, _, w, _ = affine_data
    fitted = LeastSquaresMap().fit(x, x @ w)
    np.testing.assert_allclose(fitted.coef_, w, atol=1e-8)
    assert np.all(fitted.intercept_ == 0)


def test_ridge_cross_validation_prefers_less_shrinkage_when_data_is_clean(affine_data) -> None:
    x, y, _, _ = affine_data
    noisy_y = y + np.random.default_rng(1).normal(scale=0.01, size=y.shape)
    fitted = RidgeMap(alphas=(1e-3, 1.0, 100.0)).fit(x, noisy_y)
    assert fitted.alpha_ == 1e-3 and fitted.cv_scores_.shape == (3,)
    assert fitted.get_params()["alphas"] == [1e-3, 1.0, 100.0]


def test_ridge_cross_validation_prefers_shrinkage_when_noisy() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 50))
    y = x[:, :3] @ rng.normal(size=(3, 8)) * 0.05 + rng.normal(size=(60, 8))
    fitted = RidgeMap(alphas=(1e-6, 1e3)).fit(x, y, groups=np.arange(60) % 20)
    assert fitted.alpha_ == 1e3


def test_procrustes_recovers_scaled_rotation_and_shift() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 10))
    rotation, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    y = 0.7 * x @ rotation + 2.0
    fitted = ProcrustesMap().fit(x, y)
    assert fitted.scale_ == pytest.approx(0.7)
    np.testing.assert_allclose(fitted.coef_, 0.7 * rotation, atol=1e-8)
    np.testing.assert_allclose(fitted.transform(x), y, atol=1e-8)


def test_procrustes_across_dimensions_goes_through_pca() -> None:
    rng = np.random.default_rng(4)
    latent = rng.normal(size=(500, 6))
    x = latent @ rng.normal(size=(6, 20))  # 20-d data on a 6-d subspace
    y = latent @ np.linalg.qr(rng.normal(size=(6, 6)))[0]  # 6-d target
    fitted = ProcrustesMap().fit(x, y)
    assert fitted.coef_.shape == (20, 6)
    residual = np.linalg.norm(fitted.transform(x) - y) / np.linalg.norm(y)
    assert residual < 0.35  # a pure rotation+scale cannot undo the mixing exactly, but it aligns the spaces


def test_group_folds_keep_identities_together() -> None:
    groups = np.repeat(np.arange(30), 3)
    folds = group_folds(len(groups), groups, 5, 0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(90))
    for fold in folds:
        inside = set(groups[fold])
        assert all(set(groups[other]).isdisjoint(inside) for other in folds if other is not fold)


def test_factory_and_errors() -> None:
    assert isinstance(make_estimator("ridge", alphas=(1.0,)), RidgeMap)
    with pytest.raises(ValueError, match="unknown method"):
        make_estimator("magic")
    with pytest.raises(ValueError, match="rows"):
        AffineLeastSquaresMap().fit(np.zeros((3, 2)), np.zeros((4, 2)))


def _identity_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source photos of 60 people, 5 each; the target adds per-photo nuisance the source cannot see."""
    rng = np.random.default_rng(seed)
    people = np.repeat(np.arange(60), 5)
    centres = rng.normal(size=(60, 16))
    x = centres[people] + 0.4 * rng.normal(size=(300, 16))
    w = rng.normal(size=(16, 12))
    y = (centres[people] @ w) + 2.0 * rng.normal(size=(300, 12))
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    return unit(x), unit(y), people.astype(str)


def _nearest_centroid_accuracy(mapped: np.ndarray, y: np.ndarray, people: np.ndarray) -> float:
    names = np.unique(people)
    centroids = np.stack([y[people == n].mean(axis=0) for n in names])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    mapped = mapped / np.linalg.norm(mapped, axis=1, keepdims=True)
    return float(np.mean(names[np.argmax(mapped @ centroids.T, axis=1)] == people))


def test_identity_softmax_map_separates_people_better_than_ridge() -> None:
    x, y, people = _identity_data()
    ridge = RidgeMap().fit(x, y, people)
    softmax = make_estimator("softmax", steps=100).fit(x, y, people)
    assert softmax.coef_.shape == (16, 12) and softmax.intercept_.shape == (12,)
    assert softmax.identities_ == 60  # type: ignore[attr-defined]
    assert _nearest_centroid_accuracy(softmax.transform(x), y, people) > _nearest_centroid_accuracy(
        ridge.transform(x), y, people
    )


def test_identity_softmax_map_without_labels_is_the_ridge_map() -> None:
    x, y, _ = _identity_data()
    np.testing.assert_allclose(make_estimator("softmax").fit(x, y).coef_, RidgeMap().fit(x, y).coef_)


def test_random_feature_map_fits_a_nonlinear_map_that_ridge_cannot() -> None:
    from facebridge.mapping.nonlinear import RandomFeatureMap

    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 4)) / 2
    y = np.c_[np.sin(3 * x[:, 0]), np.cos(2 * x[:, 1] * x[:, 2])]
    train, test = slice(0, 1000), slice(1000, None)

    def r2(predicted: np.ndarray) -> float:
        return 1 - float(((y[test] - predicted) ** 2).sum() / ((y[test] - y[test].mean(0)) ** 2).sum())

    nonlinear = RandomFeatureMap(n_features=512, gamma=2.0).fit(x[train], y[train])
    linear = RidgeMap().fit(x[train], y[train])
    assert r2(nonlinear.transform(x[test])) > 0.8 > r2(linear.transform(x[test]))
