"""How a comparison is judged: its score (raw cosine or AS-norm against the deployment's cohort) and
the calibration whose threshold applies, with everything an answer must state about both.

Order of preference for a comparison (`rule`):
1. a deployment calibration (`facebridge calibrate`, the deployment's own people): its normalised
   thresholds when a cohort serves the comparison, else its raw ones;
2. the shipped normalised thresholds, when a cohort serves the comparison;
3. the shipped raw thresholds (the map or space file's), saying that they are the shipped population's.

A cohort of space A serves a comparison in space B through the map the comparison uses: each side is
measured against a cohort of the other side's kind (a translated template against B's own cohort, a
native B template against A's cohort translated into B), the design the normalised thresholds were
calibrated with (docs/thresholds.md). With one of the two cohorts missing, both sides use the other.
A comparison through both maps (facebridge.mapping.compare.both_maps_plan) has its thresholds only in
calibration sets, raw and normalised, and is normalised only with a cohort of each model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from facebridge.cohort.asnorm import (
    DEFAULT_DEVIATION_POWER,
    DEFAULT_TOP_K,
    METHOD,
    CohortScale,
    cohort_scale,
    normalized_scores,
    scoring_layout,
    top_k_stats_of_sides,
)
from facebridge.cohort.calibration_set import CalibrationEntry, CalibrationSet
from facebridge.cohort.cohortfile import Cohort
from facebridge.mapping.calibration import Calibration

if TYPE_CHECKING:
    from facebridge.mapping.bank import MapPath, MappingBank
    from facebridge.mapping.compare import ComparisonPlan

Units = Literal["cosine", "as-norm"]
Source = Literal["shipped", "deployment"]


@dataclass(frozen=True)
class CohortUse:
    """A cohort one side of a comparison was measured against, and the maps it went through."""

    cohort: Cohort
    side: Literal["a", "b"]
    via: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoreRule:
    """Everything a group of same-model pairs is scored and judged with."""

    units: Units
    calibration: Calibration | None
    source: Source
    calibration_file: str | None
    note: str
    top_k: int = DEFAULT_TOP_K
    top_k_share: float | None = None  # K as a share of each cohort (asnorm.top_k_for); None: K = top_k
    cohort_a: np.ndarray | None = field(default=None, repr=False)  # what side a is measured against
    cohort_b: np.ndarray | None = field(default=None, repr=False)
    cohorts: tuple[CohortUse, ...] = ()
    stated: dict[tuple[bool, str], dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)
    # the power each side's deviation is raised to (asnorm.as_norm): the calibration set's, 1 for a set
    # written before it was recorded, the current default where no set judges the comparison
    deviation_power: float = DEFAULT_DEVIATION_POWER
    # the share of the AS-norm score blended with the cohorts' own level (asnorm.blend): the calibration
    # set's, 1 (plain AS-norm) for a set written before it was recorded
    blend: float = 1.0
    scale: CohortScale | None = None  # the cohorts' own level, where blend < 1

    @property
    def can_normalize(self) -> bool:
        return self.cohort_a is not None and self.cohort_b is not None

    def normalize(self, raw: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        """Normalised scores of row-aligned sides `a`, `b` (unit rows in the comparison space): AS-norm,
        blended with the cohorts' own level where the calibration set says so."""
        if self.cohort_a is None or self.cohort_b is None:
            return None
        stats_a, stats_b = top_k_stats_of_sides(
            a, self.cohort_a, b, self.cohort_b, self.top_k, self.top_k_share
        )
        return normalized_scores(raw, stats_a, stats_b, self.scale, self.blend, self.deviation_power)


def comparison_key(plan: ComparisonPlan) -> str | None:
    """The calibration entry a plan reads: its space, its direct map (a chain has none), or both
    direct maps joined by '+'."""
    if plan.path is None:
        return plan.space
    if plan.path.composed:
        return None
    return plan.path.maps[0].id + ("" if plan.reverse is None else "+" + plan.reverse.maps[0].id)


def comparison_pins(bank: MappingBank, plan: ComparisonPlan) -> dict[str, str]:
    """The weights an entry for this plan must have been measured with."""
    pins = {plan.space: bank.spaces[plan.space].sha256} if plan.space in bank.spaces else {}
    if plan.path is not None and not plan.path.composed:
        hop = plan.path.maps[0]
        pins = {
            hop.meta.source.model: hop.meta.source.sha256,
            hop.meta.target.model: hop.meta.target.sha256,
            "map": hop.meta.tensor_sha256,
        }
        if plan.reverse is not None:
            pins["reverse map"] = plan.reverse.maps[0].meta.tensor_sha256
    return pins


@dataclass(frozen=True)
class SideCohorts:
    """What each side of a comparison is measured against (rows in the comparison space), each row's
    person (Cohort.groups), and the cohorts used."""

    against_a: np.ndarray | None = None
    against_b: np.ndarray | None = None
    groups_a: np.ndarray | None = None
    groups_b: np.ndarray | None = None
    uses: tuple[CohortUse, ...] = ()

    def scale(self, top_k: int, share: float | None) -> CohortScale:
        """The cohorts' own level: rows of side a's kind (what side b is measured against) against rows
        of side b's kind, pairs of one person left out (asnorm.cohort_scale)."""
        assert self.against_a is not None and self.against_b is not None
        assert self.groups_a is not None and self.groups_b is not None
        return cohort_scale(self.against_b, self.against_a, self.groups_b, self.groups_a, top_k, share)


@dataclass
class Scoring:
    """The cohorts and calibration sets loaded with a bank (swapped with it on reload)."""

    cohorts: dict[str, Cohort] = field(default_factory=dict)  # by space
    sets: dict[str, CalibrationSet] = field(default_factory=dict)  # by file, deployment ones first
    _mapped: dict[tuple[str, tuple[str, ...]], np.ndarray] = field(default_factory=dict, repr=False)
    _rules: dict[tuple[object, ...], ScoreRule] = field(default_factory=dict, repr=False)
    drift_cache: list[Any] | None = field(default=None, repr=False)  # facebridge.cohort.drift.drift_of
    # facebridge.bridge: per (models, space, normalisation, operating point), what every result of that
    # comparison states besides its scores (worked out on its first request, like the rules)
    verdicts: dict[tuple[object, ...], Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def entry(
        self, bank: MappingBank, plan: ComparisonPlan
    ) -> tuple[str, CalibrationSet, CalibrationEntry] | None:
        """The first set (deployment before shipped) with an entry for this plan's exact weights."""
        key = comparison_key(plan)
        if key is None:
            return None
        pins = comparison_pins(bank, plan)
        for file, calibrations in self.sets.items():
            found = calibrations.entries.get(key)
            if found is not None and all(found.pins.get(k) == v for k, v in pins.items()):
                return file, calibrations, found
        return None

    def mapped_cohort(self, cohort: Cohort, path: MapPath) -> np.ndarray:
        """`cohort` carried through `path` (computed once per bank)."""
        key = (cohort.id, tuple(path.ids))
        found = self._mapped.get(key)
        if found is None:
            found = scoring_layout(path.apply(cohort.templates))
            with self._lock:
                self._mapped[key] = found
        return found

    def cohort_sides(self, plan: ComparisonPlan) -> SideCohorts:
        """What each side of `plan` is measured against (module docstring)."""
        if plan.reverse is not None:
            return self._both_maps_cohort_sides(plan)
        native = self.cohorts.get(plan.space)
        if plan.path is None:
            if native is None:
                return SideCohorts()
            uses = (CohortUse(native, "a"), CohortUse(native, "b"))
            return SideCohorts(native.templates, native.templates, native.groups, native.groups, uses)
        mapped_side: Literal["a", "b"] = plan.translate_side or "a"
        native_side: Literal["a", "b"] = "b" if mapped_side == "a" else "a"
        source = self.cohorts.get(plan.path.source)
        carried = self.mapped_cohort(source, plan.path) if source is not None else None
        if native is None and source is None:
            return SideCohorts()
        # with one of the two cohorts missing, both sides use the other
        if native is not None:
            against_native, native_groups = native.templates, native.groups
        else:
            assert source is not None and carried is not None
            against_native, native_groups = carried, source.groups
        against_mapped, mapped_groups = against_native, native_groups
        if source is not None and carried is not None:
            against_mapped, mapped_groups = carried, source.groups
        used: list[CohortUse] = []
        if native is not None:
            used.append(CohortUse(native, mapped_side if source is not None else "a"))
        if source is not None:
            used.append(CohortUse(source, native_side if native is not None else "a", tuple(plan.path.ids)))
        if len(used) == 1:  # one cohort serves both sides
            used.append(CohortUse(used[0].cohort, "b", used[0].via))
        against = {mapped_side: against_native, native_side: against_mapped}
        groups = {mapped_side: native_groups, native_side: mapped_groups}
        return SideCohorts(against["a"], against["b"], groups["a"], groups["b"], tuple(used))

    def _both_maps_cohort_sides(self, plan: ComparisonPlan) -> SideCohorts:
        """Both models' cohorts as rows of the both-maps comparison (`ComparisonPlan.sides`), each side
        measured against the other side's kind; none without a cohort of each model (the thresholds
        were calibrated with both). Computed once per rule (`rule` keeps them), laid out as loaded and
        carried cohorts are (asnorm.scoring_layout)."""
        assert plan.path is not None and plan.reverse is not None
        native, source = self.cohorts.get(plan.space), self.cohorts.get(plan.path.source)
        if native is None or source is None:
            return SideCohorts()
        mapped_side: Literal["a", "b"] = plan.translate_side or "a"
        native_side: Literal["a", "b"] = "b" if mapped_side == "a" else "a"
        rows = {mapped_side: source, native_side: native}
        joined_a, joined_b = map(scoring_layout, plan.sides(rows["a"].templates, rows["b"].templates))
        uses = (
            CohortUse(native, mapped_side, tuple(plan.reverse.ids)),
            CohortUse(source, native_side, tuple(plan.path.ids)),
        )
        return SideCohorts(joined_b, joined_a, rows["b"].groups, rows["a"].groups, uses)

    def rule(
        self, bank: MappingBank, plan: ComparisonPlan, normalization: Literal["auto", "none"] = "auto"
    ) -> ScoreRule:
        """How this plan's pairs are scored and which calibration judges them (module docstring);
        worked out once per plan and bank, since every request of the same two models asks again."""
        reverse = tuple(plan.reverse.ids) if plan.reverse is not None else ()
        key = (
            plan.space,
            tuple(plan.path.ids) if plan.path else (),
            reverse,
            plan.translate_side,
            normalization,
        )
        found = self._rules.get(key)
        if found is None:
            found = self._rule(bank, plan, normalization)
            with self._lock:
                self._rules[key] = found
        return found

    def _rule(
        self, bank: MappingBank, plan: ComparisonPlan, normalization: Literal["auto", "none"]
    ) -> ScoreRule:
        found = self.entry(bank, plan)
        sides = SideCohorts() if normalization == "none" else self.cohort_sides(plan)
        cohort_a, cohort_b, uses = sides.against_a, sides.against_b, sides.uses
        has_cohort = cohort_a is not None and cohort_b is not None
        shipped_raw = ScoreRule(
            "cosine",
            plan.calibration,
            "shipped",
            None,
            "",
            cohort_a=cohort_a,
            cohort_b=cohort_b,
            cohorts=uses,
        )
        if found is None:
            why = _raw_reason(
                plan, normalization, has_cohort, "no normalised calibration for this comparison"
            )
            return _with(shipped_raw, note=why)
        file, calibrations, entry = found
        info = calibrations.normalization
        top_k, share = (info.top_k, info.top_k_share) if info is not None else (DEFAULT_TOP_K, None)
        power, share_blended = DEFAULT_DEVIATION_POWER, 1.0
        if info is not None:
            power = info.deviation_power if info.deviation_power is not None else 1.0
            share_blended = info.blend if info.blend is not None else 1.0
        base = ScoreRule(
            "cosine",
            None,
            calibrations.kind,
            file,
            "",
            top_k,
            share,
            cohort_a,
            cohort_b,
            uses,
            deviation_power=power,
        )
        if has_cohort and entry.normalized is not None:
            note = f"AS-norm against the loaded cohort(s); thresholds of the {calibrations.kind} set {file}"
            if share_blended == 1.0:
                return _with(base, units="as-norm", calibration=entry.normalized, note=note)
            note = (
                f"AS-norm against the loaded cohort(s), blended ({share_blended:g}) with their own level; "
                f"thresholds of the {calibrations.kind} set {file}"
            )
            return _with(
                base,
                units="as-norm",
                calibration=entry.normalized,
                note=note,
                blend=share_blended,
                scale=sides.scale(top_k, share),
            )
        # a set's raw thresholds judge where they are the deployment's own, or where the plan has no
        # raw calibration of its own (through both maps: no map file calibrates that)
        if entry.raw is not None and (calibrations.kind == "deployment" or plan.calibration is None):
            why = _set_raw_reason(plan, calibrations.kind, file, normalization, has_cohort)
            return _with(base, calibration=entry.raw, note=why)
        why = _raw_reason(plan, normalization, has_cohort, "the set has no normalised thresholds for it")
        return _with(shipped_raw, note=why, top_k=top_k, top_k_share=share, deviation_power=power)


def _with(rule: ScoreRule, **changes: object) -> ScoreRule:
    return replace(rule, **changes)  # type: ignore[arg-type]


def _set_raw_reason(plan: ComparisonPlan, kind: str, file: str, normalization: str, has_cohort: bool) -> str:
    """Why a comparison is judged on a calibration set's raw thresholds, for the answer's note."""
    if kind == "deployment":
        why = "raw cosine with the deployment's own calibration"
        if normalization == "none":
            return why + " (normalisation off by request)"
        return why + ("" if has_cohort else f" (no cohort loaded for space {plan.space})")
    through = " through both maps" if plan.reverse is not None else ""
    why = f"raw cosine{through}, thresholds of the {kind} set {file} (its populations)"
    if normalization == "none":
        return why + "; normalisation off by request"
    return why + ("" if has_cohort else "; give a cohort of each model to normalise")


def _raw_reason(plan: ComparisonPlan, normalization: str, has_cohort: bool, otherwise: str) -> str:
    """Why a comparison is judged on raw cosine, for the answer's note."""
    data = plan.calibration.dataset if plan.calibration is not None else None
    shipped = f"the threshold is the shipped population's ({data or 'unknown'})"
    if normalization == "none":
        return f"normalisation off by request: {shipped}"
    if not has_cohort:
        return f"no cohort loaded for space {plan.space}: {shipped}; give a cohort of your own people"
    return f"{otherwise}: {shipped}"


__all__ = [
    "METHOD",
    "CohortUse",
    "ScoreRule",
    "Scoring",
    "SideCohorts",
    "comparison_key",
    "comparison_pins",
]
