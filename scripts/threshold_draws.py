"""Does the threshold study's answer hold for other draws of the scored people?

The threshold study splits each population's people in two with one seeded draw (scored half, cohort
half). A small population's result can hang on which people were drawn: rmfd-dev scores 62 people,
celeba-dev 75. Here the scored population is drawn again with seeds 0-3 (the others keep draw 0, as
they only calibrate), and each native comparison is judged as in the study: normalised thresholds
calibrated on the other populations, the FAR reached at each operating point over its nominal, and
the TAR at the normalised threshold minus the best raw TAR at the same reached FAR. Each share of the
blend (`--share`, asnorm.blend; 1 is plain AS-norm) is judged on the same draws, side by side.

Writes the section `threshold-draws` of docs/thresholds.md.

    python scripts/threshold_draws.py [--population celeba-dev ...] [--draws 4] [--share 0.75 --share 1]

(Run as a script: its folder is then on the import path, and the study's helpers import from it.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from threshold_study import MODELS, POPULATIONS, ROOT, audited_populations, judged_points, rescored

from facebridge.cohort.asnorm import DEFAULT_BLEND
from facebridge.evaluation.sections import command_line, upsert_section
from facebridge.evaluation.sections import table_row as row
from facebridge.evaluation.thresholds import (
    POINTS,
    Comparison,
    split_population,
)
from facebridge.mapping.bank import MappingBank


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "cache", help="embedding caches")
    parser.add_argument(
        "--population", action="append", help="scored populations (default celeba-dev, rmfd-dev)"
    )
    parser.add_argument("--draws", type=int, default=4, help="seeds 0..N-1 of the scored population's split")
    parser.add_argument(
        "--share", type=float, action="append", help=f"blend shares (default {DEFAULT_BLEND} and 1)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "thresholds.md", help="report to update")
    args = parser.parse_args(argv)
    bank = MappingBank.load(ROOT / "mappings")
    models, names = list(MODELS), list(POPULATIONS)
    populations = audited_populations(bank, args.cache, names, models)[0]
    natives = [Comparison(m, m) for m in models]
    shares = args.share or [DEFAULT_BLEND, 1.0]
    # the calibrating populations keep draw 0: scored once, whichever draw of the target is judged
    base = {
        share: rescored(bank, {n: split_population(populations[n]) for n in names}, natives, share)
        for share in shares
    }
    lines = [
        row(
            "share",
            "population",
            "draw",
            "comparison",
            *(f"FAR / nominal at {p}" for p in POINTS),
            "TAR - raw TAR at 1e-3",
        ),
        "|---:|---|---:|---|" + "---:|" * (len(POINTS) + 1),
    ]
    judged: dict[float, list[tuple[list[float], float]]] = {share: [] for share in shares}
    for share in shares:
        for target in args.population or list(POPULATIONS):
            for seed in range(args.draws):
                drawn = {target: split_population(populations[target], seed=seed)}
                scores = {**base[share], **rescored(bank, drawn, natives, share)}
                for c in natives:
                    at_points = judged_points(scores, c, target, names)
                    ratios = [at_points[p][0] for p in POINTS]
                    gain = at_points["far_1e-3"][1]
                    judged[share].append((ratios, gain))
                    lines.append(
                        row(share, target, seed, c.label, *(f"{r:.2f}" for r in ratios), f"{gain:+.3f}")
                    )
                    print(lines[-1], flush=True)
    summary = [
        row(
            "share",
            *(f"within [0.5x, 2x] at {p}" for p in POINTS),
            *(f"FAR / nominal at {p}" for p in POINTS),
            "TAR ≥ raw TAR at 1e-3",
            "TAR - raw TAR at 1e-3 (lowest)",
        ),
        "|---:|" + "---:|" * (2 * len(POINTS) + 2),
    ]
    for share, found in judged.items():
        table = np.array([r for r, _ in found])
        gains = np.array([g for _, g in found])
        summary.append(
            row(
                share,
                *(f"{int(np.sum((col >= 0.5) & (col <= 2)))} / {len(col)}" for col in table.T),
                *(f"{col.min():.2f} - {col.max():.2f}" for col in table.T),
                f"{int(np.sum(gains >= -1e-12))} / {len(gains)}",
                f"{gains.min() * 100:+.1f} pt",
            )
        )
    command = command_line("scripts/threshold_draws.py", argv)
    text = [
        "### Other draws of the scored people",
        "",
        f"`{command}`: the scored population's people drawn again with seeds 0-"
        f"{args.draws - 1} (draw 0 is the tables above), the natives judged as above, for each share "
        "of the blend (1: plain AS-norm).",
        "",
        *summary,
        "",
        *lines,
    ]
    upsert_section(args.out, "threshold-draws", "\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
