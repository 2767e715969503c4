"""How far can a migrated gallery go? Each direction's identification against what its source model
does on its own.

The leave-one-population-out study (scripts/map_lopo_study.py) asks a gallery migrated A→B and searched
with native B probes for rank-1 ≥ 0.97x and FNIR at FPIR 1e-2 ≤ 1.1x of B's own gallery. A gallery
made from A's templates carries what A saw of each face; where A's own gallery, searched with A's
own probes, already falls short of B's by as much, the shortfall is the models' and not the map's.
This script puts the two side by side on the same scored halves and open-set splits as the study,
with the study's logged results (`--log`) of the shipped bank, through one map and through both.

Numpy only, from the embedding caches. Writes the section `identification-natives` of
docs/maps-across-populations.md.

    python scripts/identification_natives.py [--log cache/map-lopo.jsonl]

(Run as a script: its folder is then on the import path, and the study's helpers import from it.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from map_lopo_study import (
    BOTH_MAPS,
    FNIR_GOAL,
    MODELS,
    POPULATIONS,
    RANK1_GOAL,
    ROOT,
    Result,
    identification_ok,
    load,
    read_log,
    scored_half,
)

from facebridge.evaluation.sections import command_line, upsert_section
from facebridge.evaluation.sections import table_row as row

VARIANTS = ("shipped", "shipped" + BOTH_MAPS, "+fairface" + BOTH_MAPS)


def meets_weaker(result: Result, native_rank1: float, native_fnir: float) -> bool:
    """The goal against the weaker of the two natives' galleries (as verification is judged against
    the weaker native): ratios to B's, with A's own ratios to B's given."""
    return result.rank1_ratio >= RANK1_GOAL * min(1.0, native_rank1) and result.fnir_ratio <= FNIR_GOAL * max(
        1.0, native_fnir
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "cache", help="embedding caches")
    parser.add_argument("--log", type=Path, default=ROOT / "cache" / "map-lopo.jsonl", help="study results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "maps-across-populations.md")
    args = parser.parse_args(argv)
    models = list(MODELS)
    logged: dict[tuple[str, str, str], Result] = {
        (r.population, r.direction, r.variant): r for r in read_log(args.log)[0]
    }
    summary = [
        row(
            "population",
            "native A's own gallery meets the goal against B's",
            *(f"{v}: id ok (of those where A's does / doesn't)" for v in VARIANTS),
            *(f"{v}: id ok against the weaker native" for v in VARIANTS),
        ),
        "|---|---:|" + "---:|" * 2 * len(VARIANTS),
    ]
    detail = [
        row(
            "population",
            "direction",
            "native A / native B: rank-1, FNIR",
            *(f"{v}: rank-1, FNIR" for v in VARIANTS),
        ),
        "|---|---|---:|" + "---:|" * len(VARIANTS),
    ]
    for name in POPULATIONS:
        _, scored = scored_half(load(args.cache, name, models), models)
        native = {m: measured.identification for m, measured in scored.native.items()}
        own_ok = 0
        counts = {v: [0, 0, 0, 0] for v in VARIANTS}  # ok where A's own does, of; ok where not, of
        weaker = {v: [0, 0] for v in VARIANTS}  # ok against the weaker native's gallery, of
        for a in models:
            for b in models:
                if a == b:
                    continue
                direction = f"{a}→{b}"
                rank1 = native[a].rank1 / max(native[b].rank1, 1e-9)
                fnir = native[a].fnir / max(native[b].fnir, 1e-9)
                a_ok = identification_ok(rank1, fnir)
                own_ok += a_ok
                cells = []
                for v in VARIANTS:
                    result = logged.get((name, direction, v))
                    if result is None:
                        cells.append("")
                        continue
                    ok = result.identification_ok
                    slot = 0 if a_ok else 2
                    counts[v][slot] += ok
                    counts[v][slot + 1] += 1
                    weaker[v][0] += meets_weaker(result, rank1, fnir)
                    weaker[v][1] += 1
                    cells.append(f"{result.rank1_ratio:.3f}, {result.fnir_ratio:.2f}")
                detail.append(row(name, direction, f"{rank1:.3f}, {fnir:.2f}", *cells))
        summary.append(
            row(
                name,
                f"{own_ok} / {len(models) * (len(models) - 1)}",
                *(
                    f"{c[0] + c[2]} ({c[0]} of {c[1]} / {c[2]} of {c[3]})" if c[1] + c[3] else ""
                    for c in counts.values()
                ),
                *(f"{w[0]} / {w[1]}" if w[1] else "" for w in weaker.values()),
            )
        )
        print(summary[-1], flush=True)
    command = command_line("scripts/identification_natives.py", argv)
    text = [
        "### Identification against the source model's own gallery",
        "",
        f"`{command}`, on the scored halves and open-set splits of the study above, with its logged "
        "results. *native A / native B*: A's own gallery searched with A's own probes, against B's "
        "(the identification goal asks the migrated gallery for rank-1 ≥ 0.97x and FNIR at FPIR 1e-2 "
        "≤ 1.1x of B's). Where A's own gallery falls short of that, a gallery of A's templates carried "
        "into B starts from less than B's. *against the weaker native*: rank-1 ≥ 0.97x and FNIR ≤ 1.1x "
        "of the weaker of A's and B's own galleries (as verification is judged). Cells: rank-1 ratio, "
        "FNIR ratio.",
        "",
        *summary,
        "",
        *detail,
    ]
    upsert_section(args.out, "identification-natives", "\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
