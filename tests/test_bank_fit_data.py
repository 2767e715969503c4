"""The bank fit's extra fitting data (scripts/fit_bank.py --unlabelled, --balance, --param), on small
synthetic populations: resampled and unlabelled rows are fitting rows only (every verification pair,
hence quality, thresholds, selection and confidence, comes from the labelled photos as they are), and
without them a bank map is exactly what the plain path (`fitting_rows` into `make_map`) gives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from facebridge.evaluation import population_study
from facebridge.evaluation.population import (
    FittingData,
    PairSample,
    Population,
    as_unlabelled,
    balanced_accuracy,
    fitting_rows,
    measure,
    pair_scores,
    verification_pairs,
)
from facebridge.evaluation.population_study import VALIDATION_IMPOSTORS, mapped, selection_score
from facebridge.mapping import bank_fit
from facebridge.mapping.bank_fit import (
    BANK_CALIBRATION_IMPOSTORS,
    BankRecipe,
    FittedBankMap,
    fit_bank_map,
    merge,
)
from facebridge.mapping.estimators import group_folds
from facebridge.mapping.mapfile import SpaceRef
from facebridge.mapping.methods import MapEstimator, make_map
from facebridge.mapping.residual import split_groups

pytestmark = pytest.mark.fast
S, T = "s", "t"
REFS = (SpaceRef(model=S, dim=12, sha256="a" * 64), SpaceRef(model=T, dim=16, sha256="b" * 64))
FAST = {"hidden": 16, "max_epochs": 4}
BALANCE = 40


def population(name: str, people: int, photos: int, seed: int) -> Population:
    """Unit rows of a 12-d source and a 16-d target related by a fixed nonlinear map, per person."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(people), photos)
    x = rng.normal(size=(people, 12))[ids] + 0.4 * rng.normal(size=(len(ids), 12))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.tanh(x @ np.random.default_rng(99).normal(size=(12, 16))) + 0.05 * rng.normal(size=(len(ids), 16))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    names = np.array([f"{name}-p{i}" for i in ids])
    paths = np.array([f"{n}/{k}.jpg" for k, n in enumerate(names)])
    return Population(name, paths, names, {S: x.astype(np.float32), T: y.astype(np.float32)})


@pytest.fixture(scope="module")
def labelled() -> Population:
    """Two pooled populations, one larger and one smaller than BALANCE photos."""
    return merge([population("big", 24, 4, 1), population("small", 9, 3, 2)])


@pytest.fixture(scope="module")
def unlabelled() -> Population:
    photos = population("extra", 60, 1, 3)
    return as_unlabelled(Population("extra", photos.paths, photos.identities, photos.clean))


def recipe(**changes: Any) -> BankRecipe:
    return replace(BankRecipe(methods=("ridge", "residual-mlp"), params={"residual-mlp": FAST}), **changes)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[Any]]]:
    """Records the identities every verification-pair sample is drawn from, and every fit's rows."""
    seen: dict[str, list[Any]] = {"pairs": [], "fits": []}

    def pairs(identities: np.ndarray, *args: Any, **kwargs: Any) -> PairSample:
        seen["pairs"].append(np.asarray(identities).copy())
        return verification_pairs(identities, *args, **kwargs)

    def maker(method: str, **params: Any) -> MapEstimator:
        estimator = make_map(method, **params)
        fit = estimator.fit

        def recorded(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Any:
            seen["fits"].append((method, params, np.asarray(groups).copy()))
            return fit(x, y, groups)

        estimator.fit = recorded  # type: ignore[method-assign]
        return estimator

    monkeypatch.setattr(bank_fit, "verification_pairs", pairs)
    monkeypatch.setattr(population_study, "verification_pairs", pairs)
    monkeypatch.setattr(population_study, "make_map", maker)
    yield seen


def test_resampled_and_unlabelled_rows_never_enter_verification_pairs(
    labelled: Population, unlabelled: Population, spy: dict[str, list[Any]]
) -> None:
    plain = fit_bank_map(labelled, *REFS, recipe())
    spy["pairs"].clear()
    fitted = fit_bank_map(labelled, *REFS, recipe(data=FittingData(unlabelled, BALANCE)))
    train, held = split_groups(labelled.identities, len(labelled), 0.15, 0)
    rest = labelled.identities[train]
    validation, *folds = spy["pairs"]
    # selection scored on the validation photos as they are; the folds are the other photos, each once
    assert validation.tolist() == labelled.identities[held].tolist()
    assert len(folds) == 3 and Counter(np.concatenate(folds).tolist()) == Counter(rest.tolist())
    # so every count drawn from pairs is the plain fit's: the same labelled photos, pairs and rows
    q, p = fitted.meta.quality, plain.meta.quality
    assert q.verification_pairs == p.verification_pairs
    for new, old in ((fitted.meta.calibration, plain.meta.calibration),):
        assert new is not None and old is not None
        for a, b in ((new.cross, old.cross), (new.mapped, old.mapped)):
            assert (a.genuine_pairs, a.impostor_pairs, a.images, a.identities) == (
                b.genuine_pairs,
                b.impostor_pairs,
                b.images,
                b.identities,
            )
            assert a.images == len(rest)
    assert fitted.confidence is None or fitted.meta.confidence is not None
    if fitted.meta.confidence is not None and plain.meta.confidence is not None:
        assert fitted.meta.confidence.rows == plain.meta.confidence.rows == len(rest)
    selection = fitted.meta.provenance.selection
    assert (
        selection is not None
        and selection.split(":")[0] == str(plain.meta.provenance.selection).split(":")[0]
    )


def test_unlabelled_rows_are_fitting_rows_of_every_fit(
    labelled: Population, unlabelled: Population, spy: dict[str, list[Any]]
) -> None:
    data = FittingData(unlabelled, BALANCE)
    fitted = fit_bank_map(labelled, *REFS, recipe(data=data))
    extra = set(unlabelled.identities.tolist())
    # 2 validation maps, 3 fold maps, the shipped map (the residual MLP's ridge part is fitted inside it)
    assert len(spy["fits"]) == 6
    for method, params, groups in spy["fits"]:
        assert params == (FAST if method == "residual-mlp" else {})
        by_population = Counter("extra" if g in extra else str(g).split("-", 1)[0] for g in groups.tolist())
        assert by_population == {"big": BALANCE, "small": BALANCE, "extra": BALANCE}
    # the shipped map is the chosen method fitted on exactly those rows
    expected = make_map(fitted.meta.method, **recipe().params.get(fitted.meta.method, {}))
    expected.fit(*data.rows(labelled, S, T))
    check_shipped(fitted, expected)
    provenance = fitted.meta.provenance
    assert provenance.dataset == "big+small+extra"
    assert [(p.name, p.images, p.identities, p.rows) for p in provenance.populations] == [
        ("big", 96, 24, BALANCE),
        ("small", 27, 9, BALANCE),
        ("extra", 60, None, BALANCE),
    ]
    assert provenance.identities == len(set(spy["fits"][-1][2].tolist()) - extra)


def test_resampling_is_seeded_and_repeats_small_populations_evenly(
    labelled: Population, unlabelled: Population
) -> None:
    data = FittingData(unlabelled, BALANCE, seed=5)
    parts = data.parts(labelled, S, T)
    again = data.parts(labelled, S, T)
    for part, same in zip(parts, again, strict=True):
        np.testing.assert_array_equal(part.x, same.x)
    small = next(p for p in parts if p.name == "small")
    counts = Counter(map(bytes, small.x))  # 27 photos to 40 rows: each once or twice
    assert len(counts) == 27 and set(counts.values()) == {1, 2}
    big = next(p for p in parts if p.name == "big")
    assert len({bytes(r) for r in big.x}) == BALANCE  # drawn without replacement


def test_without_extra_data_the_map_is_the_plain_paths(labelled: Population) -> None:
    """The old code path, spelled out with the primitives: selection on the validation identities,
    cross-fitted quality on the rest, the shipped map fitted on every row `fitting_rows` gives."""
    r = recipe()
    fitted = fit_bank_map(labelled, *REFS, r)
    fitted_again = fit_bank_map(labelled, *REFS, replace(r, data=FittingData(), origins={"big": ("b", "t")}))
    np.testing.assert_array_equal(fitted.weight, fitted_again.weight)

    def fit(p: Population, method: str) -> MapEstimator:
        return make_map(method, **r.params.get(method, {})).fit(*fitting_rows(p, S, T))

    train, held = split_groups(labelled.identities, len(labelled), r.validation_fraction, r.seed)
    fit_part, val = labelled.subset(train), labelled.subset(held)
    pairs = verification_pairs(val.identities, VALIDATION_IMPOSTORS, r.seed)
    scores = {}
    for method in r.methods:
        unit = mapped(fit(fit_part, method), val.clean[S])
        scores[method] = selection_score(measure(*pair_scores(unit, val.clean[T], pairs)))
    method = max(r.methods, key=lambda m: scores[m])
    assert fitted.meta.method == method
    assert str(fitted.meta.provenance.selection).endswith(
        ", ".join(f"{m} {v:.4f}" for m, v in scores.items())
    )
    rest = labelled.subset(train)
    genuine, impostor = [], []
    for rows in group_folds(len(rest), rest.identities, r.folds, r.seed):
        mask = np.zeros(len(rest), bool)
        mask[rows] = True
        part = rest.subset(mask)
        sample = verification_pairs(part.identities, BANK_CALIBRATION_IMPOSTORS // r.folds, r.seed)
        s, lab = pair_scores(mapped(fit(rest.subset(~mask), method), part.clean[S]), part.clean[T], sample)
        genuine.append(s[lab])
        impostor.append(s[~lab])
    g, i = np.concatenate(genuine), np.concatenate(impostor)  # pooled as the bank pools them
    accuracy = balanced_accuracy(np.r_[g, i], np.r_[np.ones(len(g), bool), np.zeros(len(i), bool)])
    assert fitted.meta.quality.accuracy_cross == accuracy
    check_shipped(fitted, fit(labelled, method))
    x, _, groups = fitting_rows(labelled, S, T)
    provenance = fitted.meta.provenance
    assert (provenance.dataset, provenance.images, provenance.identities) == (
        labelled.name,
        len(x),
        len(np.unique(groups)),
    )
    assert provenance.pairing.endswith("quality and thresholds cross-fitted")


def check_shipped(fitted: FittedBankMap, expected: MapEstimator) -> None:
    affine: Any = expected
    np.testing.assert_array_equal(fitted.weight, np.asarray(affine.coef_, np.float32))
    np.testing.assert_array_equal(fitted.bias, np.asarray(affine.intercept_, np.float32))
    if fitted.residual is not None:
        np.testing.assert_array_equal(fitted.residual.out_weight, np.asarray(affine.out_weight_, np.float32))


def test_a_cheaper_method_is_kept_unless_beaten_by_more_than_the_margin() -> None:
    from facebridge.mapping.bank_fit import choose_method

    scores = {"ridge": 1.640, "residual-mlp": 1.652}
    assert choose_method(("ridge", "residual-mlp"), scores) == "residual-mlp"  # the best wins by default
    assert choose_method(("ridge", "residual-mlp"), scores, 0.015) == "ridge"
    assert choose_method(("ridge", "residual-mlp"), scores, 0.010) == "residual-mlp"
    assert choose_method(("ridge", "residual-mlp"), {"ridge": 1.7, "residual-mlp": 1.7}) == "ridge"
