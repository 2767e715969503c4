"""Scoring two embeddings that may come from different models, with the threshold that applies.

Same model: cosine in that space, with the space's calibration. Different models: translate one side
into the other's space (the direction with the better recorded quality, or the one the caller names)
and use that map's cross-space calibration. Where both direct maps exist, a pair can also be compared
in both spaces at once (`both_maps_plan`): the mean of `A->B(a) . b` and `a . B->A(b)`, two
independent estimates of the same similarity whose errors partly cancel (docs/maps-across-populations.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from facebridge.exceptions import NoMapPath, NotCalibrated
from facebridge.mapping.bank import MapPath, MappingBank
from facebridge.mapping.calibration import HELDOUT_CROSS_METHOD, SPACE_METHOD, Calibration
from facebridge.mapping.mapfile import SpaceCalibration

BOTH_MAPS_SCALE = np.float32(1 / np.sqrt(2))


def joined_rows(in_space: np.ndarray, in_other: np.ndarray) -> np.ndarray:
    """One side of a comparison through both maps: its unit rows in the comparison space and in the
    other model's, joined and scaled by 1/sqrt(2), so that joined rows stay unit length and the dot
    product of two sides joined in the same order is the mean of the cosines in the two spaces."""
    width = in_space.shape[1]
    joined = np.empty((len(in_space), width + in_other.shape[1]), np.result_type(in_space, in_other))
    np.multiply(in_space, BOTH_MAPS_SCALE, out=joined[:, :width])  # written in place: no stacked copy
    np.multiply(in_other, BOTH_MAPS_SCALE, out=joined[:, width:])
    return joined


@dataclass(frozen=True)
class ComparisonPlan:
    """How a pair of models is compared: in which space, through which path, with which calibration."""

    space: str
    path: MapPath | None  # None: same space
    translate_side: Literal["a", "b"] | None  # the side that is mapped
    calibration: Calibration | None
    calibrated: bool  # False when a composed path borrows its last hop's calibration
    reverse: MapPath | None = None  # both maps: the direct map from `space` back to the other model

    @property
    def kind(self) -> Literal["same-space", "cross", "both-maps"]:
        if self.path is None:
            return "same-space"
        return "cross" if self.reverse is None else "both-maps"

    def sides(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit rows of both sides whose dot product is this plan's raw score.

        Same space: the rows themselves; across: the translated side mapped; both maps: each side
        as `[its row in space, its row in the other space] / sqrt(2)`, so that one dot product is
        `(A->B(a) . b + a . B->A(b)) / 2` and every row stays unit length (cohort statistics and
        batched products work on them unchanged).
        """
        if self.path is None:
            return a, b
        mapped, native = (a, b) if self.translate_side == "a" else (b, a)
        translated = self.path.apply(mapped)
        if self.reverse is None:
            return (translated, native) if self.translate_side == "a" else (native, translated)
        mapped_side = joined_rows(translated, mapped)
        native_side = joined_rows(native, self.reverse.apply(native))
        return (mapped_side, native_side) if self.translate_side == "a" else (native_side, mapped_side)


def both_maps_plan(bank: MappingBank, model_a: str, model_b: str) -> ComparisonPlan | None:
    """Both spaces at once, when direct maps connect the two models both ways (else None). Its
    thresholds come from a calibration set (the map files calibrate one direction each)."""
    if model_a == model_b:
        return None
    single = plan_comparison(bank, model_a, model_b)
    assert single.path is not None
    if single.path.composed:
        return None
    reverse = bank.find_path(single.path.target, single.path.source)
    if reverse is None or reverse.composed:
        return None
    return ComparisonPlan(single.space, single.path, single.translate_side, None, True, reverse)


def plan_comparison(
    bank: MappingBank, model_a: str, model_b: str, space: str | None = None
) -> ComparisonPlan:
    if model_a == model_b:
        if space not in (None, model_a):
            raise NoMapPath(f"both sides are {model_a}; comparing in {space} is not supported")
        space_calibration = bank.space_calibrations.get(model_a)
        same = _space_calibration(space_calibration) if space_calibration is not None else None
        return ComparisonPlan(model_a, None, None, same, same is not None)
    options: list[tuple[Literal["a", "b"], MapPath]] = []
    sides: tuple[tuple[Literal["a", "b"], str, str], ...] = (("a", model_a, model_b), ("b", model_b, model_a))
    for side, src, tgt in sides:
        if space in (None, tgt):
            path = bank.find_path(src, tgt)
            if path is not None:
                options.append((side, path))
    if not options:
        where = f" in space {space}" if space else ""
        raise NoMapPath(f"no map or chain of maps connects {model_a} and {model_b}{where}")
    # direct maps first, then the best recorded quality
    side, path = max(options, key=lambda o: (not o[1].composed, _path_score(o[1])))
    calibration = _cross_calibration(path)
    return ComparisonPlan(path.target, path, side, calibration, calibration is not None and not path.composed)


def _space_calibration(space: SpaceCalibration) -> Calibration:
    """The space's calibration, naming its data; files written before calibrations did are described
    by the space file itself (same images, same code)."""
    return _with_data(space.calibration, space.dataset, space.images, space.identities, SPACE_METHOD)


def _cross_calibration(path: MapPath) -> Calibration | None:
    """The path's cross calibration, naming its data; older map files are described by their last
    hop's provenance (cross calibrations are measured on the fit's held-out identities)."""
    calibration = path.cross_calibration
    if calibration is None:
        return None
    fit = path.maps[-1].meta.provenance
    return _with_data(
        calibration, fit.dataset, fit.heldout_images, fit.heldout_identities, HELDOUT_CROSS_METHOD
    )


def _with_data(
    calibration: Calibration, dataset: str, images: int, identities: int, method: str
) -> Calibration:
    """`calibration` unchanged when it names its data, else a copy described by its file."""
    if calibration.dataset is not None:
        return calibration
    update = {"dataset": dataset, "images": images, "identities": identities, "method": method}
    return calibration.model_copy(update=update)


def _path_score(path: MapPath) -> float:
    """Direct maps are ranked by held-out cross accuracy (mean cosine when unlabelled), chains by quality."""
    if not path.composed and path.maps[0].meta.quality.accuracy_cross is not None:
        return path.maps[0].meta.quality.accuracy_cross
    return path.quality


def resolve_threshold(
    plan: ComparisonPlan, operating_point: str, raw_threshold: float | None
) -> tuple[float, str, Calibration | None]:
    """(threshold, operating point name, the calibration it comes from) for a plan; a raw threshold
    comes from no calibration, so nothing is claimed about its error rates."""
    if raw_threshold is not None:
        return raw_threshold, "custom", None
    if plan.calibration is None:
        what = "same-space calibration" if plan.path is None else "cross-space calibration for this map"
        raise NotCalibrated(f"space {plan.space} has no {what}; pass a raw threshold")
    return plan.calibration.thresholds[operating_point].threshold, operating_point, plan.calibration


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)
