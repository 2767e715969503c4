"""Do comparisons through both maps keep their FAR on people they were not calibrated on, and do they
accept more genuine pairs than either map alone?

Across models, /verify compares a template of A with one of B through both direct maps where a
cohort of each model is loaded: `(A->B(a) . b + a . B->A(b)) / 2`, AS-normalised with those cohorts
(without one, through the one map: the table "Without a cohort" says why). Judged here exactly as
the threshold study judges the single-map directions (same split,
cohorts and label audit): thresholds calibrated on the other populations, the FAR reached at each
operating point, far_range, the TAR against the best raw TAR at the same FAR, and the TAR against the
single-map directions' (each with its own AS-norm thresholds, at the same operating point); and,
without a cohort, the set's raw thresholds through both maps against the one map's own.

Writes the section `both-maps-thresholds` of docs/thresholds.md.

    python scripts/both_maps_thresholds.py

(Run as a script: its folder is then on the import path, and the study's helpers import from it.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from threshold_study import MODELS, POPULATIONS, ROOT, audited_populations, main_table, score_all, shipped_raw

from facebridge.evaluation.sections import command_line, upsert_section
from facebridge.evaluation.sections import table_row as row
from facebridge.evaluation.thresholds import (
    POINTS,
    Comparison,
    ComparisonScores,
    comparisons,
    reached_far,
    split_population,
    tar_at_threshold,
)
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.compare import both_maps_plan, plan_comparison


def without_cohort_rows(
    bank: MappingBank,
    scores: dict[tuple[Comparison, str], ComparisonScores],
    names: list[str],
    pairs: list[Comparison],
) -> list[str]:
    """Raw scores at far_1e-3, as a deployment without cohorts would be judged: through both maps with
    the shipped set's raw thresholds (pooled over its populations), and through the one map the
    service picks with its map file's thresholds (calibrated on LFW and CelebA people)."""
    lines = [
        row(
            "population",
            "pair",
            "one map",
            "FAR, one map",
            "TAR, one map",
            "FAR, both maps (set's raw)",
            "TAR, both maps (set's raw)",
        ),
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name in names:
        for c in pairs:
            single_plan = plan_comparison(bank, c.source, c.target)
            both_plan = both_maps_plan(bank, c.source, c.target)
            assert single_plan.path is not None and both_plan is not None
            single = Comparison(single_plan.path.source, single_plan.space)
            found = bank.scoring.entry(bank, both_plan)
            assert found is not None and found[2].raw is not None, c.label
            one_t = shipped_raw(bank, single).thresholds["far_1e-3"].threshold
            both_t = found[2].raw.thresholds["far_1e-3"].threshold
            one_s, both_s = scores[(single, name)], scores[(c, name)]
            lines.append(
                row(
                    name,
                    c.label,
                    single.label,
                    f"{reached_far(one_s.raw_impostor, one_t):.1e}",
                    f"{tar_at_threshold(one_s.raw_genuine, one_t):.3f}",
                    f"{reached_far(both_s.raw_impostor, both_t):.1e}",
                    f"{tar_at_threshold(both_s.raw_genuine, both_t):.3f}",
                )
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "cache", help="embedding caches")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "thresholds.md", help="report to update")
    args = parser.parse_args(argv)
    bank = MappingBank.load(ROOT / "mappings")
    models, names = list(MODELS), list(POPULATIONS)
    populations = audited_populations(bank, args.cache, names, models)[0]
    splits = {n: split_population(population) for n, population in populations.items()}
    pairs = [c for c in comparisons(models, both_maps=True) if c.both_maps]
    singles = [Comparison(c.source, c.target) for c in pairs] + [
        Comparison(c.target, c.source) for c in pairs
    ]
    scores = score_all(bank, splits, [*pairs, *singles])
    cells = main_table(bank, scores, names, [*pairs, *singles])
    by = {(c.population, c.comparison, c.point): c for c in cells}

    summary = [
        row(
            "population",
            "point",
            "within [0.5x, 2x]",
            "far_range holds",
            "within its error",
            "TAR ≥ raw TAR at the same FAR",
            "TAR ≥ both single maps'",
            "TAR - the better single map's (mean)",
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    detail = [
        row("population", "pair", "point", "FAR / nominal", "TAR", "A→B TAR", "B→A TAR", "far_range"),
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for name in names:
        for point, nominal in POINTS.items():
            at = [by[(name, c, point)] for c in pairs]
            better = [
                max(
                    by[(name, Comparison(c.source, c.target), point)].norm_tar,
                    by[(name, Comparison(c.target, c.source), point)].norm_tar,
                )
                for c in pairs
            ]
            gains = [cell.norm_tar - best for cell, best in zip(at, better, strict=True)]
            summary.append(
                row(
                    name,
                    point,
                    f"{sum(c.within_goal for c in at)} / {len(at)}",
                    f"{sum(c.in_range for c in at)} / {len(at)}",
                    f"{sum(c.in_range_within_error for c in at)} / {len(at)}",
                    f"{sum(c.tar_not_below for c in at)} / {len(at)}",
                    f"{sum(g >= 0 for g in gains)} / {len(at)}",
                    f"{sum(gains) / len(gains) * 100:+.2f} pts",
                )
            )
            print(summary[-1], flush=True)
            for c, cell in zip(pairs, at, strict=True):
                forward = by[(name, Comparison(c.source, c.target), point)]
                backward = by[(name, Comparison(c.target, c.source), point)]
                detail.append(
                    row(
                        name,
                        c.label,
                        point,
                        f"{cell.norm_far / nominal:.2f}",
                        f"{cell.norm_tar:.3f}",
                        f"{forward.norm_tar:.3f}",
                        f"{backward.norm_tar:.3f}",
                        f"[{cell.far_range[0]:.1e}, {cell.far_range[1]:.1e}]",
                    )
                )
    command = command_line("scripts/both_maps_thresholds.py", argv)
    text = [
        "### Across models through both maps",
        "",
        f"`{command}`: each pair of the four models compared through both direct maps, "
        "`(A->B(a) . b + a . B->A(b)) / 2`, normalised against a cohort of each model as the service "
        "normalises (AS-norm blended with the cohorts' own level), judged as above (thresholds "
        "calibrated on the other populations, same split, cohorts and label audit). *TAR ≥ both single "
        "maps'*: the TAR at the normalised threshold against each single-map direction's at the same "
        "operating point (each with its own normalised thresholds).",
        "",
        *summary,
        "",
        *detail,
        "",
        "#### Without a cohort",
        "",
        "Raw cosine at nominal 1e-3, as answers are judged where no cohort is loaded: through both maps "
        "with the shipped set's raw thresholds (pooled over its four populations, equal weights), and "
        "through the one map the service picks, with its map file's thresholds (calibrated on LFW and "
        "CelebA people). The service uses both maps only with AS-norm thresholds (a cohort of each model) "
        "or a deployment's own calibration (`serves_both_maps`, facebridge/bridge.py). Neither set of "
        "thresholds is scored here on people it did not see: the set's were pooled over these same "
        "scored halves, and the map files' were calibrated on LFW and CelebA people. The table shows "
        "what answers state, not a held-out test; a pooled threshold misses every single population "
        "even on the people it was calibrated on.",
        "",
        *without_cohort_rows(bank, scores, names, pairs),
    ]
    upsert_section(args.out, "both-maps-thresholds", "\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
