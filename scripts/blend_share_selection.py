"""Whether the blend's share is better chosen per comparison than fixed: nested leave-one-population-out.

The service decides on `share * s_norm + (1 - share) * (s - M) / D` with one share for every
comparison (0.75; docs/thresholds.md "Blending per-template and population-level normalisation").
Lower shares rank pairs better where raw cosine already ranks well and hold the FAR less well where
populations differ. This study picks each comparison's share from its calibration populations alone:
for each scored population, the lowest candidate share whose thresholds, calibrated on all but one of
the *other* populations, reach a FAR within `--margin` of nominal on the one left out, for each of
them in turn; then the scored population is judged with that share, calibrated on all the others, as
the main table judges it. The fixed shares are printed beside it.

Numpy on the embedding caches, the same split, cohorts and label audit as scripts/threshold_study.py.
Prints a Markdown table; writes nothing. (Run as a script: its folder is then on the import path,
and the study's helpers import from it.)

    python scripts/blend_share_selection.py [--margin 0.6:1.7] [--rule 1e-3] [--rule all]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import threshold_study as study

from facebridge.evaluation.sections import table_row as row
from facebridge.evaluation.thresholds import (
    POINTS,
    Comparison,
    blended_scores,
    comparisons,
    population_scale,
    reached_far,
    split_population,
    tar_at_reached_far,
    tar_at_threshold,
)
from facebridge.mapping.bank import MappingBank

ROOT = study.ROOT
SHARES = (0.5, 0.6, 0.7, 0.75, 1.0)
GOAL = study.GOAL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "cache", help="embedding caches")
    parser.add_argument(
        "--margin",
        action="append",
        help="LOW:HIGH, FAR / nominal a share must keep on every left-out calibration population; "
        "repeat (default 0.5:2 0.6:1.7 0.7:1.5)",
    )
    parser.add_argument(
        "--rule",
        action="append",
        choices=("1e-3", "all"),
        help="operating points a margin applies to: nominal 1e-3, or every one; repeat (default both)",
    )
    args = parser.parse_args(argv)
    margins = [tuple(float(x) for x in m.split(":")) for m in args.margin or ("0.5:2", "0.6:1.7", "0.7:1.5")]
    bank = MappingBank.load(ROOT / "mappings")
    names, models = list(study.POPULATIONS), list(study.MODELS)
    populations, _ = study.audited_populations(bank, args.cache, names, models)
    splits = {n: split_population(p) for n, p in populations.items()}
    comps = comparisons(models)
    plain = study.score_all(bank, splits, comps, blend_share=1.0)
    scales = {(c, n): population_scale(bank, c, splits[n].cohort) for c in comps for n in names}
    mixed = {s: {key: blended_scores(v, scales[key], s) for key, v in plain.items()} for s in SHARES}

    @cache
    def judged(
        share: float, comparison: Comparison, held_out: str, pool: tuple[str, ...]
    ) -> dict[str, tuple[float, float]]:
        """FAR / nominal and TAR minus the oracle raw TAR at the same FAR, per operating point, of
        `held_out` judged with thresholds calibrated on the rest of `pool`."""
        scores = mixed[share]
        calibration = study.loo(scores, comparison, held_out, pool, True)
        s = scores[(comparison, held_out)]
        out = {}
        for point, nominal in POINTS.items():
            threshold = calibration.thresholds[point].threshold
            far = reached_far(s.norm_impostor, threshold)
            gap = tar_at_threshold(s.norm_genuine, threshold) - tar_at_reached_far(
                s.raw_genuine, s.raw_impostor, far
            )
            out[point] = (far / nominal, gap)
        return out

    print(row("share", "chosen", *(f"within [0.5x, 2x], TAR ≥ raw at {p}" for p in POINTS)))
    print("|---|---|" + "---:|" * len(POINTS))
    for rule, (low, high) in itertools.product(args.rule or ("1e-3", "all"), margins):
        points = list(POINTS) if rule == "all" else ["far_1e-3"]
        chosen: list[float] = []
        verdicts = []
        for name in names:
            rest = tuple(n for n in names if n != name)
            for c in comps:
                share = next(
                    (
                        s
                        for s in SHARES
                        if all(
                            low <= judged(s, c, inner, rest)[p][0] <= high for inner in rest for p in points
                        )
                    ),
                    1.0,
                )
                chosen.append(share)
                verdicts.append(judged(share, c, name, tuple(names)))
        counts = ", ".join(f"{s:g}: {chosen.count(s)}" for s in SHARES)
        print(row(f"chosen within [{low:g}x, {high:g}x] ({rule})", counts, *cells(verdicts)))
    for share in SHARES:
        verdicts = [judged(share, c, name, tuple(names)) for name in names for c in comps]
        print(row(f"fixed {share:g}", "", *cells(verdicts)))
    return 0


def cells(verdicts: Sequence[dict[str, tuple[float, float]]]) -> list[str]:
    """`within / n, better / n` per operating point."""
    out = []
    for point in POINTS:
        ratios = np.array([v[point][0] for v in verdicts])
        gaps = np.array([v[point][1] for v in verdicts])
        within = int(np.sum((GOAL[0] <= ratios) & (ratios <= GOAL[1])))
        out.append(f"{within} / {len(verdicts)}, {int(np.sum(gaps >= -1e-12))} / {len(verdicts)}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
