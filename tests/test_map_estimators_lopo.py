"""The estimators and protocol of the leave-one-population-out study (scripts/map_lopo_study.py):
geometry-keeping losses and ensembles round-trip through map files with identical outputs, the
ceiling's halves share no person, and a map fitted for one population never saw its people."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from facebridge.evaluation.population import Population, population_origin, split_people
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.mapfile import FitPopulation, ResidualTensors, load_map, map_filename, save_map
from facebridge.mapping.residual import ResidualMLPMap

from .conftest import ROOT
from .factories import SHIPPED_MANIFEST, synthetic_map

pytestmark = pytest.mark.fast
ARC, SIR = "arcface-mbf128", "sirius-mbf192"


def study_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("map_lopo_study", ROOT / "scripts" / "map_lopo_study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["map_lopo_study"] = module
    spec.loader.exec_module(module)
    return module


def paired(n: int, people: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit rows of a 128-d source and a 192-d target related by a fixed nonlinear map, with identities."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 128))
    ids = rng.integers(0, people, n)
    x = centres[ids] + 0.3 * rng.normal(size=(n, 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = np.random.default_rng(99).normal(size=(128, 192))
    y = np.tanh(x @ w) + 0.05 * rng.normal(size=(n, 192))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32), ids.astype(str)


def test_geometry_loss_gradient_matches_finite_differences() -> None:
    estimator = ResidualMLPMap(similarity_weight=0.7, cosine_weight=0.3)
    rng = np.random.default_rng(0)
    predicted, target = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))

    def loss(p: np.ndarray) -> float:
        u = p / np.linalg.norm(p, axis=1, keepdims=True)
        v = target / np.linalg.norm(target, axis=1, keepdims=True)
        return float(0.3 * np.mean(1 - np.sum(u * v, 1)) + 0.7 * np.mean((u @ u.T - v @ v.T) ** 2))

    numeric = np.zeros_like(predicted)
    for i, j in np.ndindex(*predicted.shape):
        step = np.zeros_like(predicted)
        step[i, j] = 1e-6
        numeric[i, j] = (loss(predicted + step) - loss(predicted - step)) / 2e-6
    np.testing.assert_allclose(estimator._geometry_grad(predicted, target), numeric, atol=1e-7)


@pytest.mark.parametrize(
    "params",
    [{"similarity_weight": 1.0, "cosine_weight": 0.5, "hidden": 32}, {"hidden": 16, "members": 3}],
    ids=["geometry", "ensemble"],
)
def test_new_estimators_round_trip_through_map_files(tmp_path: Path, params: dict[str, float]) -> None:
    x, y, ids = paired(300, 30, 0)
    estimator = ResidualMLPMap(max_epochs=3, random_state=3, **params).fit(x, y, ids)  # type: ignore[arg-type]
    members = int(params.get("members", 1))
    assert estimator.in_weight_.shape[1] == members * int(params.get("hidden", 256))
    meta, _, _ = synthetic_map(ARC, SIR)
    residual = ResidualTensors(
        estimator.in_weight_.astype(np.float32),
        estimator.in_bias_.astype(np.float32),
        estimator.out_weight_.astype(np.float32),
        estimator.out_bias_.astype(np.float32),
    )
    weight, bias = estimator.coef_.astype(np.float32), estimator.intercept_.astype(np.float32)
    save_map(tmp_path / map_filename(ARC, SIR), meta, weight, bias, residual)
    assert load_map(tmp_path / map_filename(ARC, SIR)).residual is not None
    bank = MappingBank.load(tmp_path, SHIPPED_MANIFEST)
    assert bank.refused == []
    probe, _, _ = paired(50, 10, 1)
    expected = estimator.transform(probe)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(bank.maps[(ARC, SIR)].apply(probe), expected, atol=1e-5)


def test_an_ensemble_is_the_average_of_its_members() -> None:
    x, y, ids = paired(300, 30, 2)
    ensemble = ResidualMLPMap(hidden=16, members=2, max_epochs=3, random_state=5).fit(x, y, ids)
    first = ResidualMLPMap(hidden=16, max_epochs=3, random_state=5).fit(x, y, ids)
    second = ResidualMLPMap(hidden=16, max_epochs=3, random_state=6).fit(x, y, ids)
    np.testing.assert_allclose(
        ensemble.transform(x), (first.transform(x) + second.transform(x)) / 2, rtol=1e-6, atol=1e-8
    )


def population(name: str, people: int, photos: int, seed: int) -> Population:
    x, y, _ = paired(people * photos, people, seed)
    ids = np.repeat([f"p{i}" for i in range(people)], photos)
    paths = np.array([f"{p}/{k}.jpg" for k, p in enumerate(ids)])
    return Population(name, paths, ids, {ARC: x, SIR: y})


def test_the_ceiling_halves_share_no_person() -> None:
    whole = population("demo", 30, 4, 0)
    first, second = split_people(whole)
    assert set(first.identities) & set(second.identities) == set()
    assert len(first) + len(second) == len(whole)


def test_the_normalisation_cohort_holds_other_people_only() -> None:
    """The AS-norm cohort is drawn from the half the scored people are not in, at most COHORT photos."""
    study = study_module()
    whole = population("demo", 600, 4, 4)
    _, scored = study.scored_half(whole, [ARC, SIR])
    assert set(scored.cohort.identities) & set(scored.population.identities) == set()
    assert len(scored.cohort) == study.COHORT < len(whole) - len(scored.population)
    assert set(scored.native_norm) == {ARC, SIR}


def test_the_fitting_data_never_holds_the_scored_population() -> None:
    study = study_module()
    others = [population("alpha", 20, 3, 1), population("beta", 10, 2, 2)]
    unlabelled = population(study.UNLABELLED, 50, 1, 3)
    for variant in study.VARIANTS:
        data = study.fitting_population(variant, others, unlabelled, 0)
        names = {str(p).split("/", 1)[0] for p in data.paths}
        assert names <= {"alpha", "beta", study.UNLABELLED} and "scored" not in names
        # identities are prefixed by population: a name recurring in two populations stays two people
        assert all(str(i).split(":", 1)[0] in names for i in data.identities)
    balanced = study.fitting_population(study.VARIANTS[2], others, unlabelled, 0)
    counts = {n: sum(str(p).startswith(n + "/") for p in balanced.paths) for n in ("alpha", "beta")}
    assert counts == {"alpha": study.BALANCED_ROWS, "beta": study.BALANCED_ROWS}


def test_population_origin_reads_source_and_terms(tmp_path: Path) -> None:
    (tmp_path / "SOURCE.txt").write_text(
        "Demo faces: 10 people. More text here.\nOrigin: somewhere.\n"
        "Terms: research use only;\ncite the demo paper.\nProtocol: whatever.\n"
    )
    source, terms = population_origin(tmp_path)
    assert source == "Demo faces: 10 people."
    assert terms == "research use only; cite the demo paper."
    entry = FitPopulation(name="demo", images=10, identities=10, source=source, terms=terms)
    assert FitPopulation.model_validate_json(entry.model_dump_json()) == entry
