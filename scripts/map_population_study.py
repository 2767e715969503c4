"""How the shipped maps hold on each population, next to the natives and to a ceiling, in 1:1 and 1:N.

For every population at hand and every ordered pair of the models: the natives' verification accuracy
and TAR at FAR 1e-3 (every genuine pair, up to 1,000,000 impostor pairs), the shipped map's cross
comparison (A mapped into B against native B, both orders), and a ceiling: the same family of map
(ridge, or --ceiling-method) fitted on half of the scored population's own people and scored on the
other half (the most a map of that family can give there). Then open-set identification: half of the
people enrolled with one photo, B's own gallery against the gallery migrated from A, searched with
native B probes: rank-1 rate and FNIR at FPIR 1e-2.

Numpy only, from the embedding caches. Writes the section `shipped-bank` of
docs/maps-across-populations.md.

    python scripts/map_population_study.py [--population imfdb-dev] [--ceiling-method residual-mlp]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from facebridge.evaluation.identification import identify, open_set_split
from facebridge.evaluation.population import DEVELOPMENT_POPULATIONS as POPULATIONS
from facebridge.evaluation.population import STUDY_MODELS as MODELS
from facebridge.evaluation.population import (
    Population,
    load_population,
    measure,
    pair_scores,
    split_people,
    verification_pairs,
)
from facebridge.evaluation.population_study import fit_estimator, mapped
from facebridge.evaluation.sections import command_line, upsert_section
from facebridge.evaluation.sections import table_row as row
from facebridge.mapping.bank import MappingBank

ROOT = Path(__file__).resolve().parents[1]
IMPOSTORS = 1_000_000


def study(bank: MappingBank, population: Population, models: list[str], method: str) -> list[str]:
    fit_half, scored = split_people(population)
    pairs = verification_pairs(scored.identities, IMPOSTORS, 0)
    native = {m: measure(*pair_scores(scored.clean[m], scored.clean[m], pairs)) for m in models}
    split = open_set_split(scored.identities)
    ident = {
        m: identify(scored.clean[m][split.gallery], scored.clean[m], split, scored.identities) for m in models
    }
    lines = []
    for a in models:
        for b in models:
            if a == b:
                continue
            path = bank.find_path(a, b)
            assert path is not None
            shipped_x = path.apply(np.ascontiguousarray(scored.clean[a]))
            cross = measure(*pair_scores(shipped_x, scored.clean[b], pairs))
            ceiling_map = fit_estimator(fit_half, a, b, method)
            ceiling_x = mapped(ceiling_map, scored.clean[a])
            ceiling = measure(*pair_scores(ceiling_x, scored.clean[b], pairs))
            weaker = min(native[a].accuracy, native[b].accuracy)
            migrated = identify(shipped_x[split.gallery], scored.clean[b], split, scored.identities)
            ceiling_id = identify(ceiling_x[split.gallery], scored.clean[b], split, scored.identities)
            lines.append(
                row(
                    f"{a}→{b}",
                    f"{weaker * 100:.2f}",
                    f"{cross.accuracy * 100:.2f} ({(cross.accuracy - weaker) * 100:+.1f})",
                    f"{ceiling.accuracy * 100:.2f} ({(ceiling.accuracy - weaker) * 100:+.1f})",
                    f"{cross.tar_far_1e3 / max(native[b].tar_far_1e3, 1e-9):.2f}",
                    f"{ident[b].rank1:.3f} / {ident[b].fnir:.3f}",
                    f"{migrated.rank1:.3f} / {migrated.fnir:.3f}",
                    f"{ceiling_id.rank1:.3f} / {ceiling_id.fnir:.3f}",
                )
            )
    header = [
        f"### {population.name}: {len(scored)} photos of {len(np.unique(scored.identities))} people scored "
        f"({pairs.genuine_pairs} genuine, {pairs.impostor_pairs} impostor pairs); ceiling fitted on the "
        f"other {len(np.unique(fit_half.identities))} people; {len(split.mated)} mated and "
        f"{len(split.non_mated)} non-mated searches",
        "",
        row(
            "direction",
            "weaker native acc (%)",
            "shipped map acc (gap)",
            f"ceiling ({method}) acc (gap)",
            "shipped TAR@1e-3 / native B",
            "native B rank-1 / FNIR@FPIR 1e-2",
            "migrated A→B gallery",
            "ceiling gallery",
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return header + lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "cache", help="embedding caches (NAME-MODEL.npz)"
    )
    parser.add_argument("--population", action="append", help=f"repeat; default {', '.join(POPULATIONS)}")
    parser.add_argument("--model", action="append", help=f"repeat; default {', '.join(MODELS)}")
    parser.add_argument("--ceiling-method", default="ridge", help="the map family fitted for the ceiling")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "maps-across-populations.md")
    args = parser.parse_args(argv)
    models = args.model or list(MODELS)
    bank = MappingBank.load(ROOT / "mappings")
    command = command_line("scripts/map_population_study.py", argv)
    sections = [
        "## The shipped bank on each population, against the natives and a ceiling",
        "",
        f"Measured with `{command}` ({time.strftime('%Y-%m-%d')}). The shipped maps were fitted on "
        "LFW and CelebA development photos, so their rows on lfw and celeba-dev score maps on people "
        "(and photos) they saw; imfdb-dev and rmfd-dev are unseen. Gaps are against the weaker native.",
    ]
    for name in args.population or list(POPULATIONS):
        started = time.time()
        sections += ["", *study(bank, load_population(args.cache, name, models), models, args.ceiling_method)]
        print(f"{name}: {time.time() - started:.0f} s", flush=True)
    upsert_section(args.out, "shipped-bank", "\n".join(sections) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
