"""The out-of-population study of many model pairs, as a Markdown section with plots.

Runs `study_direction` for every ordered pair of models and every transfer (fit on one population,
score another), scores a bank folder's shipped maps on a population they never saw (the before/after
of a refit), and turns the results into the tables of docs/interchangeability.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebridge.evaluation.population import (
    Population,
    PopulationMetrics,
    measure,
    pair_scores,
    verification_pairs,
)
from facebridge.evaluation.population_study import (
    DirectionResult,
    NativeCache,
    study_direction,
    thresholds_of,
)
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.calibration import OPERATING_POINTS

SECTION = "out-of-population"


def run_population_study(
    populations: dict[str, Population],
    transfers: Sequence[tuple[str, str]],
    models: Sequence[str],
    methods: Sequence[str],
    augmentations: dict[str, Sequence[str]],
    pairs: Sequence[tuple[str, str]] | None = None,
    calibration: str = "validation",
    log: Callable[[str], None] = print,
) -> list[DirectionResult]:
    """Every ordered pair (or `pairs`) for every (fit, test) transfer; `augmentations[fit]` are the
    variants added to the fitting population's photos."""
    results = []
    cache = NativeCache()
    for fit, test in transfers:
        for source, target in pairs or list(itertools.permutations(models, 2)):
            result = study_direction(
                populations[fit],
                populations[test],
                source,
                target,
                methods,
                augmentations.get(fit, ()),
                calibration,
                cache,
            )
            results.append(result)
            log(result_row(result))
    return results


@dataclass(frozen=True)
class BankScore:
    """A shipped map scored on a population: cross metrics and its calibrated FARs reached there."""

    map_id: str
    method: str
    cross: PopulationMetrics
    native_source: PopulationMetrics
    native_target: PopulationMetrics


def score_bank(bank_dir: Path, population: Population, models: Sequence[str]) -> list[BankScore]:
    """Each direct map of `bank_dir` between `models`, scored on `population` (mapped source template
    against native target probe, both orders), with its own recorded far thresholds checked there."""
    bank = MappingBank.load(bank_dir)
    pairs = verification_pairs(population.identities)
    native = {m: measure(*pair_scores(population.clean[m], population.clean[m], pairs)) for m in models}
    scores = []
    for source, target in itertools.permutations(models, 2):
        loaded = bank.maps.get((source, target))
        if loaded is None:
            continue
        unit = loaded.apply(np.ascontiguousarray(population.clean[source]))
        calibration = loaded.meta.calibration
        thresholds = thresholds_of(calibration.cross) if calibration is not None else None
        cross = measure(*pair_scores(unit, population.clean[target], pairs), thresholds)
        scores.append(BankScore(loaded.id, loaded.meta.method, cross, native[source], native[target]))
    return scores


def short(model: str) -> str:
    return model.split("-", 1)[0]


def far_check_text(metrics: PopulationMetrics, point: str = "far_1e-3") -> str:
    check = next((c for c in metrics.far_checks if c.operating_point == point), None)
    if check is None:
        return "-"
    low, high = check.interval
    return f"{check.far:.2e} [{low:.1e}, {high:.1e}]"


def result_row(r: DirectionResult) -> str:
    weaker_tar = min(r.native_source.tar_far_1e3, r.native_target.tar_far_1e3)
    return (
        f"| {short(r.source)} → {short(r.target)} | {r.fit_population} → {r.test_population} | {r.method} "
        f"| {r.weaker_native.accuracy * 100:.2f} / {weaker_tar * 100:.1f} "
        f"| {r.cross.accuracy * 100:.2f} | {r.cross.tar_far_1e3 * 100:.1f} | {r.cross.tar_far_1e4 * 100:.1f} "
        f"| {r.accuracy_gap * 100:+.2f} | {r.tar_ratio:.2f} | {'yes' if r.meets_goal else 'no'} "
        f"| {far_check_text(r.cross)} |"
    )


RESULT_HEADER = [
    "| A → B | fitted on → scored on | method | weaker native acc / TAR@1e-3 (%) | cross acc (%) "
    "| cross TAR@1e-3 (%) | cross TAR@1e-4 (%) | acc gap (pts) | TAR ratio | goal met "
    "| FAR at the far_1e-3 threshold [95% CI] |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
]


def far_ratios(results: Sequence[DirectionResult]) -> dict[str, float]:
    """Per operating point, the largest factor between a calibrated FAR and the FAR it reached on the
    other population (either way), over every cross and native comparison measured."""
    worst = dict.fromkeys(OPERATING_POINTS, 1.0)
    for r in results:
        for metrics in (r.cross, r.native_source, r.native_target):
            for check in metrics.far_checks:
                if check.accepted == 0:
                    continue
                ratio = check.far / check.nominal_far
                worst[check.operating_point] = max(worst[check.operating_point], ratio, 1.0 / ratio)
    return worst


def population_markdown(
    results: Sequence[DirectionResult],
    command: str,
    figures: Path,
    before: Sequence[BankScore] = (),
    before_label: str = "",
) -> str:
    """The section: protocol, per-pair table, the calibrated thresholds' reach, and the plots."""
    transfers = sorted({(r.fit_population, r.test_population) for r in results})
    lines = [
        "## Out-of-population: maps fitted on one population, scored on another",
        "",
        f"Measured with `{command}`.",
        "",
        "Everything the map learns (method choice on a validation fifth of the fitting identities, the "
        "map itself, and the cross thresholds, from the chosen method's scores on those validation "
        "identities) comes from the fitting population; the scored population's photos are only "
        "scored: every genuine pair and a seeded sample of 2,000,000 impostor pairs, each scored in "
        "both orders for cross comparisons "
        "(mapped A template against native B probe). Accuracy is balanced (mean of TAR and TRR) at a "
        "threshold chosen on the other nine of ten random folds of pairs. The goal: cross accuracy >= "
        "weaker native - 1.0 point and cross TAR@FAR 1e-3 >= 0.9 x the weaker native's.",
        "",
    ]
    for fit, test in transfers:
        subset = [r for r in results if (r.fit_population, r.test_population) == (fit, test)]
        if not subset:
            continue
        met = sum(r.meets_goal for r in subset)
        first = subset[0]
        lines += [
            f"### Fitted on {fit} ({first.fit_rows:,} fitting rows, {first.fit_identities:,} people; "
            f"augmentations: {', '.join(first.augmentations) or 'none'}), scored on {test}",
            "",
            f"{first.cross.genuine_pairs:,} genuine and {first.cross.impostor_pairs:,} impostor cross "
            f"scores per pair. Goal met by {met} of {len(subset)} directions.",
            "",
            *RESULT_HEADER,
            *(result_row(r) for r in subset),
            "",
        ]
        chosen = [r for r in subset if r.validation]
        if chosen:
            methods = list(chosen[0].validation)
            lines += [
                "Validation (fitting population's held-out fifth; accuracy + TAR@1e-3, the higher the "
                "better) that chose each method:",
                "",
                "| A → B | " + " | ".join(methods) + " |",
                "|---|" + "---:|" * len(methods),
            ]
            for r in chosen:
                cells = " | ".join(
                    f"{(r.validation[m].accuracy + r.validation[m].tar_far_1e3) * 100:.1f}" for m in methods
                )
                lines.append(f"| {short(r.source)} → {short(r.target)} | {cells} |")
            lines.append("")
    lines += _far_lines(results)
    if before:
        lines += [
            f"### The shipped bank before this refit ({before_label})",
            "",
            "| map | method | weaker native acc / TAR@1e-3 (%) | cross acc (%) | cross TAR@1e-3 (%) "
            "| FAR at its far_1e-3 threshold [95% CI] |",
            "|---|---|---:|---:|---:|---|",
        ]
        for b in before:
            weaker = min(b.native_source, b.native_target, key=lambda m: m.accuracy)
            weaker_tar = min(b.native_source.tar_far_1e3, b.native_target.tar_far_1e3)
            lines.append(
                f"| {b.map_id} | {b.method} | {weaker.accuracy * 100:.2f} / {weaker_tar * 100:.1f} "
                f"| {b.cross.accuracy * 100:.2f} | {b.cross.tar_far_1e3 * 100:.1f} "
                f"| {far_check_text(b.cross)} |"
            )
        lines.append("")
    _plots(results, figures)
    rel = figures.name
    lines += [
        f"![cross accuracy against the weaker native, per pair]({rel}/population-gap.png)",
        "",
        f"![FAR reached on the other population at thresholds calibrated for 1e-3]({rel}/population-far.png)",
        "",
    ]
    return "\n".join(lines)


def _far_lines(results: Sequence[DirectionResult]) -> list[str]:
    ratios = far_ratios(results)
    lines = [
        "### Do calibrated thresholds keep their FAR on other people?",
        "",
        "Same-space thresholds are calibrated on all of the fitting population's own pairs; cross "
        "thresholds on the chosen map's scores of the fitting population's validation identities. "
        "The FAR they reach on the scored population, with its Clopper-Pearson 95% "
        "interval (which covers pair sampling only):",
        "",
        "| comparison | fitted on → scored on | nominal | reached [95% CI] |",
        "|---|---|---:|---|",
    ]
    seen = set()
    for r in results:
        transfer = f"{r.fit_population} → {r.test_population}"
        for label, metrics in (
            (f"{r.source} (same space)", r.native_source),
            (f"{r.target} (same space)", r.native_target),
            (f"{short(r.source)} → {short(r.target)} cross", r.cross),
        ):
            if (label, transfer) in seen:
                continue
            seen.add((label, transfer))
            for check in metrics.far_checks:
                if check.operating_point == "far_1e-3":
                    lines.append(f"| {label} | {transfer} | 1e-3 | {far_check_text(metrics)} |")
    lines += [
        "",
        "Largest factor between the nominal FAR and the FAR reached on the other population, either way "
        "(the shipped calibrations state their `far_range` as the Clopper-Pearson interval widened by "
        "this factor): " + ", ".join(f"{point} x{factor:.2f}" for point, factor in ratios.items()) + ".",
        "",
    ]
    return lines


def _plots(results: Sequence[DirectionResult], figures: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures.mkdir(parents=True, exist_ok=True)
    transfers = sorted({(r.fit_population, r.test_population) for r in results})
    fig, axes = plt.subplots(len(transfers), 1, figsize=(10, 3.2 * len(transfers)), squeeze=False)
    for ax, (fit, test) in zip(axes[:, 0], transfers, strict=True):
        subset = [r for r in results if (r.fit_population, r.test_population) == (fit, test)]
        labels = [f"{short(r.source)}→{short(r.target)}" for r in subset]
        pos = np.arange(len(subset))
        ax.bar(pos - 0.2, [r.weaker_native.accuracy * 100 for r in subset], 0.4, label="weaker native")
        ax.bar(pos + 0.2, [r.cross.accuracy * 100 for r in subset], 0.4, label="cross (mapped A vs native B)")
        ax.set_xticks(pos, labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(75, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"fitted on {fit}, scored on {test}")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(figures / "population-gap.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    checks = [
        (f"{short(r.source)}→{short(r.target)}\n{r.fit_population[:3]}→{r.test_population[:3]}", c)
        for r in results
        for c in r.cross.far_checks
        if c.operating_point == "far_1e-3"
    ]
    pos = np.arange(len(checks))
    fars = np.array([c.far for _, c in checks])
    low = fars - np.array([c.interval[0] for _, c in checks])
    high = np.array([c.interval[1] for _, c in checks]) - fars
    ax.errorbar(pos, fars, yerr=[low, high], fmt="o", capsize=3)
    ax.axhline(1e-3, color="grey", linestyle="--", label="nominal 1e-3")
    ax.set_yscale("log")
    ax.set_xticks(pos, [label for label, _ in checks], fontsize=6, rotation=90)
    ax.set_ylabel("FAR reached")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figures / "population-far.png", dpi=110)
    plt.close(fig)
