"""Thresholds meet their false accept targets on the data they were estimated from."""

from __future__ import annotations

import numpy as np
import pytest

from app.mapping.calibration import calibrate, genuine_impostor_scores


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
