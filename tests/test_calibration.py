"""Thresholds meet their false accept targets on the data they were estimated from."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facebridge.mapping.bank import MappingBank
from facebridge.mapping.calibration import (
    INTERVAL_KIND,
    Calibration,
    calibrate,
    clopper_pearson,
    genuine_impostor_scores,
    widen_for_population,
)
from facebridge.mapping.compare import plan_comparison
from facebridge.mapping.mapfile import MAP_SUFFIX, SPACE_SUFFIX
from facebridge.vision.manifest import load_manifest

from .conftest import MODELS_DIR, ROOT


def test_thresholds_meet_far_targets() -> None:
    rng = np.random.default_rng(0)
    genuine = rng.normal(0.6, 0.1, 5_000)
    impostor = rng.normal(0.0, 0.1, 200_000)
    calibration = calibrate(genuine, impostor)
    for name, target in [("far_1e-2", 1e-2), ("far_1e-3", 1e-3), ("far_1e-4", 1e-4)]:
        point = calibration.thresholds[name]
        assert point.far <= target
        assert np.mean(impostor >= point.threshold) == pytest.approx(point.far)
        # the smallest such threshold: one step lower would exceed the target
        assert np.mean(impostor >= point.threshold - 1e-4) > target * 0.9
        assert point.reliable
    assert calibration.thresholds["far_1e-2"].threshold < calibration.thresholds["far_1e-4"].threshold
    best = calibration.thresholds["max_accuracy"].threshold
    assert 0.2 < best < 0.4  # equal-variance Gaussians at 0 and 0.6 cross at 0.3


def test_small_impostor_sets_are_flagged_unreliable() -> None:
    calibration = calibrate(np.array([0.9, 0.8]), np.linspace(-0.5, 0.5, 2000))
    assert not calibration.thresholds["far_1e-4"].reliable
    assert calibration.thresholds["far_1e-2"].reliable


def test_genuine_impostor_split() -> None:
    vectors = np.eye(4)
    ids = np.array(["a", "a", "b", "c"])
    genuine, impostor = genuine_impostor_scores(vectors, vectors, ids)
    assert genuine.tolist() == [0.0] and len(impostor) == 5


def test_clopper_pearson_known_values() -> None:
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(0.3085, abs=1e-4))
    assert clopper_pearson(5, 10) == (pytest.approx(0.1871, abs=1e-4), pytest.approx(0.8129, abs=1e-4))
    assert clopper_pearson(10, 10) == (pytest.approx(0.6915, abs=1e-4), 1.0)
    assert clopper_pearson(1, 100) == (pytest.approx(0.000253, abs=1e-6), pytest.approx(0.05446, abs=1e-5))
    for k, n, confidence in [(-1, 10, 0.95), (11, 10, 0.95), (0, 0, 0.95), (1, 10, 1.0)]:
        with pytest.raises(ValueError):
            clopper_pearson(k, n, confidence)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 100_000).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_clopper_pearson_contains_the_estimate_and_grows_with_k(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = clopper_pearson(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0 and low < high
    next_low, next_high = clopper_pearson(k + 1, n)
    assert next_low >= low and next_high >= high
    wide_low, wide_high = clopper_pearson(k, n, 0.99)
    assert wide_low <= low and wide_high >= high


def _data_fields() -> dict[str, object]:
    return {"dataset": "lfw+celeba-dev", "images": 900, "identities": 300, "method": "held-out identities"}


def test_calibrate_states_intervals_and_data() -> None:
    rng = np.random.default_rng(1)
    genuine, impostor = rng.normal(0.6, 0.1, 2_000), rng.normal(0.0, 0.1, 50_000)
    calibration = calibrate(genuine, impostor, **_data_fields())  # type: ignore[arg-type]
    assert calibration.model_dump(include=set(_data_fields())) == _data_fields()
    for point in calibration.thresholds.values():
        far_k = int(np.sum(impostor >= point.threshold))
        tar_k = int(np.sum(genuine >= point.threshold))
        assert point.far_interval == clopper_pearson(far_k, len(impostor))
        assert point.tar_interval == clopper_pearson(tar_k, len(genuine))
        assert point.interval == INTERVAL_KIND and point.far_range is None and point.far_range_note is None
    # at FAR 1e-4 only 5 of 50,000 impostors pass: the interval is wide, and says so
    low, high = calibration.thresholds["far_1e-4"].far_interval or (0.0, 0.0)
    assert low < 0.5e-4 and high > 2e-4
    assert calibrate(genuine, impostor).dataset is None


def test_files_without_intervals_get_the_exact_ones() -> None:
    """Calibrations written before intervals and data were recorded load, with the same intervals."""
    rng = np.random.default_rng(2)
    fresh = calibrate(rng.normal(0.6, 0.1, 3_000), rng.normal(0.0, 0.1, 120_000))
    old = fresh.model_dump(exclude={"dataset", "images", "identities", "method"})
    for point in old["thresholds"].values():
        for key in ("far_interval", "tar_interval", "interval", "far_range", "far_range_note"):
            del point[key]
    loaded = Calibration.model_validate_json(json.dumps(old))
    assert loaded == fresh


def test_widen_for_population() -> None:
    rng = np.random.default_rng(3)
    calibration = calibrate(rng.normal(0.6, 0.1, 2_000), rng.normal(0.0, 0.1, 200_000))
    note = "FAR on celeba-dev / FAR on lfw, measured by the population study"
    widened = widen_for_population(
        calibration, {"far_1e-3": 3.0, "far_1e-2": 1.0, "max_accuracy": 5000}, note
    )
    for name, factor in [("far_1e-3", 3.0), ("far_1e-2", 1.0)]:
        low, high = calibration.thresholds[name].far_interval or (0.0, 0.0)
        assert widened.thresholds[name].far_range == (low / factor, high * factor)
        assert widened.thresholds[name].far_range_note == note
    assert widened.thresholds["max_accuracy"].far_range is not None
    assert widened.thresholds["max_accuracy"].far_range[1] == 1.0  # capped
    assert widened.thresholds["far_1e-4"].far_range is None
    assert all(point.far_range is None for point in calibration.thresholds.values())  # a copy
    for bad in [{"far_1e-3": 0.5}, {"far_1e-3": float("nan")}, {"far_1e-5": 2.0}]:
        with pytest.raises(ValueError):
            widen_for_population(calibration, bad, note)


def test_shipped_files_load_and_state_intervals_and_data() -> None:
    """Every map and space file in mappings/, written before these fields existed, still loads."""
    directory = ROOT / "mappings"
    bank = MappingBank.load(directory, load_manifest(MODELS_DIR / "manifest.toml"))
    assert bank.refused == []
    assert len(bank.maps) == len(list(directory.rglob("*" + MAP_SUFFIX)))
    assert len(bank.space_calibrations) == len(list(directory.rglob("*" + SPACE_SUFFIX)))
    for source, target in bank.maps:
        for a, b in [(source, source), (source, target)]:
            calibration = plan_comparison(bank, a, b).calibration
            assert calibration is not None and calibration.dataset and calibration.images
            assert calibration.method and calibration.identities
            for point in calibration.thresholds.values():
                assert point.far_interval is not None
                assert point.far_interval[0] <= point.far <= point.far_interval[1]
