"""Does another cohort normalisation keep the FAR goal and rank pairs better than AS-norm?

AS-norm standardises a raw score by the mean and standard deviation of each side's top-K cohort
scores. On celeba-dev, the population most like the calibration's, it ranks pairs up to 1.5 points
below raw cosine at the same FAR (docs/thresholds.md). The standard deviation of a top-K slice is
the noisiest of the four statistics, so the variants here replace it:

- `as-norm`: plain AS-norm (K = 5% of the cohort, 10-100; each side divides by its deviation), the
  reference;
- `mean-only`: each side's top-K mean subtracted, no division (`s - (mu_a + mu_b) / 2`);
- `sd-top-100`: the mean from the service's K, the deviation from a fixed, larger K of 100;
- `sd-whole-cohort`: the mean from the service's K, the deviation from all of the side's cohort scores;
- `s-norm`: mean and deviation of all of the side's cohort scores (symmetric Z-norm, no top-K);
- `sd-power-0.5`, `sd-power-0.75`: AS-norm dividing by the top-K deviation raised to that power, between
  mean-only (0) and AS-norm (1); 0.75 is the service's rule since this comparison
  (facebridge/cohort/asnorm.py).

Every variant is judged as the study judges AS-norm: thresholds calibrated on the other populations
in the variant's own units, the FAR reached at each operating point, and the TAR at the normalised
threshold against the best raw TAR at the same reached FAR.

Writes the section `normalization-variants` of docs/thresholds.md.

    python scripts/normalization_variants.py [--variant mean-only ...]

(Run as a script: its folder is then on the import path, and the study's helpers import from it.)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threshold_study import MODELS, POPULATIONS, ROOT, audited_populations, main_table

from facebridge.cohort.asnorm import SideStats, top_k_stats
from facebridge.evaluation.sections import command_line, sections_of, upsert_section
from facebridge.evaluation.sections import table_row as row
from facebridge.evaluation.thresholds import (
    POINTS,
    Comparison,
    PopulationSplit,
    comparison_scores,
    comparison_sides,
    comparisons,
    side_stats,
    split_population,
)
from facebridge.mapping.bank import MappingBank

Sides = tuple[SideStats, SideStats]


def whole_cohort(templates: np.ndarray, cohort: np.ndarray) -> SideStats:
    """Mean and deviation of every score of each row against the cohort."""
    scores = templates @ cohort.T
    return SideStats(scores.mean(axis=1).astype(np.float32), scores.std(axis=1).astype(np.float32))


def variant_sides(name: str, bank: MappingBank, comparison: Comparison, split: PopulationSplit) -> Sides:
    """Each side's statistics under the variant; each side against a cohort of the other side's kind,
    as the service measures it."""
    a_stats, b_stats = side_stats(bank, comparison, split)
    if name == "as-norm" or name in POWERS:
        return a_stats, b_stats
    a, b = comparison_sides(bank, comparison, split.scored)
    cohort_a, cohort_b = comparison_sides(bank, comparison, split.cohort)
    deviations: dict[str, Callable[[], Sides]] = {
        "mean-only": lambda: (
            SideStats(a_stats.mean, np.ones_like(a_stats.std)),
            SideStats(b_stats.mean, np.ones_like(b_stats.std)),
        ),
        "sd-top-100": lambda: (
            SideStats(a_stats.mean, top_k_stats(a, cohort_b, 100).std),
            SideStats(b_stats.mean, top_k_stats(b, cohort_a, 100).std),
        ),
        "sd-whole-cohort": lambda: (
            SideStats(a_stats.mean, whole_cohort(a, cohort_b).std),
            SideStats(b_stats.mean, whole_cohort(b, cohort_a).std),
        ),
        "s-norm": lambda: (whole_cohort(a, cohort_b), whole_cohort(b, cohort_a)),
    }
    return deviations[name]()


POWERS = {"sd-power-0.5": 0.5, "sd-power-0.75": 0.75}  # the rest divide by their deviation whole
VARIANTS = (
    "as-norm",
    "mean-only",
    "sd-top-100",
    "sd-whole-cohort",
    "s-norm",
    "sd-power-0.5",
    "sd-power-0.75",
)


def earlier_rows(report: Path) -> dict[str, list[str]]:
    """The rows of each variant in the report's section, kept when only some variants are rerun."""
    section = sections_of(report.read_text()).get("normalization-variants", "") if report.exists() else ""
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        first = line.split("|")[1].strip() if line.startswith("| ") else ""
        if first in VARIANTS:
            rows.setdefault(first, []).append(line)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "cache", help="embedding caches")
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="default: all")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "thresholds.md", help="report to update")
    args = parser.parse_args(argv)
    bank = MappingBank.load(ROOT / "mappings")
    models, names = list(MODELS), list(POPULATIONS)
    populations = audited_populations(bank, args.cache, names, models)[0]
    splits = {n: split_population(population) for n, population in populations.items()}
    comps = comparisons(models)
    lines = [
        row(
            "variant",
            "point",
            "within [0.5x, 2x], all",
            *(f"within, {n}" for n in names),
            "TAR ≥ raw TAR at the same FAR, all",
            *(f"TAR, {n}" for n in names),
            "TAR - raw TAR on celeba-dev (mean)",
        ),
        "|---|---|" + "---:|" * (2 * len(names) + 3),
    ]
    measured: dict[str, list[str]] = earlier_rows(args.out) if args.variant else {}
    for variant in args.variant or VARIANTS:
        measured[variant] = []
        scores = {
            (c, n): comparison_scores(
                bank, c, s, variant_sides(variant, bank, c, s), POWERS.get(variant, 1.0)
            )
            for c in comps
            for n, s in splits.items()
        }
        cells = main_table(bank, scores, names, comps)
        for point in POINTS:
            at = [c for c in cells if c.point == point]
            celeba = [c.norm_tar - c.oracle_raw_tar for c in at if c.population == "celeba-dev"]
            measured[variant].append(
                row(
                    variant,
                    point,
                    f"{sum(c.within_goal for c in at)} / {len(at)}",
                    *(sum(c.within_goal for c in at if c.population == n) for n in names),
                    f"{sum(c.tar_not_below for c in at)} / {len(at)}",
                    *(sum(c.tar_not_below for c in at if c.population == n) for n in names),
                    f"{np.mean(celeba) * 100:+.2f} pts",
                )
            )
            print(measured[variant][-1], flush=True)
    lines += [line for variant in VARIANTS for line in measured.get(variant, [])]
    command = command_line("scripts/normalization_variants.py", argv)
    text = [
        "### Other normalisations against AS-norm",
        "",
        f"`{command}` (with `--variant`, the other variants' rows are kept from the run before): "
        "the study's split, calibration and judgement, with each side's "
        "statistics computed another way (the script's docstring lists them). *within*: the FAR "
        "reached within [0.5x, 2x] of nominal; *TAR*: the normalised threshold's TAR at least the best "
        "raw TAR at the same reached FAR.",
        "",
        *lines,
    ]
    upsert_section(args.out, "normalization-variants", "\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
