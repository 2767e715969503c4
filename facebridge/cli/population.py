"""The out-of-population protocol on the command line: `facebridge evaluate|report --protocol population`.

Populations are named folders (`--population lfw=../shared/datasets/lfw`); their embedding caches,
clean and augmented, are built on first use (resumable, shared with every other study) and reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LFW_FOLDS, POPULATION = "lfw-folds", "population"
DEFAULT_POPULATIONS = ["lfw=../shared/datasets/lfw", "celeba-dev=../shared/datasets/celeba-dev"]


def add_population_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--protocol population")
    group.add_argument(
        "--protocol",
        choices=[LFW_FOLDS, POPULATION],
        default=LFW_FOLDS,
        help="lfw-folds: maps fitted per LFW fold; population: fitted on one population, scored on another",
    )
    group.add_argument(
        "--population",
        action="append",
        metavar="NAME=FOLDER",
        help="a labelled photo folder (one sub-folder per identity); repeat. Default: "
        + ", ".join(DEFAULT_POPULATIONS),
    )
    group.add_argument(
        "--transfer",
        action="append",
        metavar="FIT:TEST",
        help="fit on FIT, score on TEST; repeat (default: both ways between the first two populations)",
    )
    group.add_argument(
        "--augment",
        action="append",
        default=[],
        metavar="FIT:KIND",
        help="add the KIND variant of FIT's photos to its fitting rows, e.g. lfw:flip; repeat",
    )
    group.add_argument(
        "--calibration",
        choices=["validation", "cross-fit", "none"],
        default="validation",
        help="cross thresholds checked on the scored population: from the validation identities' "
        "scores (default) or by cross-fitting every fitting identity (one more fit per fold)",
    )


def _populations(args: argparse.Namespace, models: list[str]):  # type: ignore[no-untyped-def]
    """Load (building missing caches first) every population the transfers use."""
    from facebridge.cli.common import open_pipeline, settings_from
    from facebridge.dataset_embedding import CLEAN, dataset_cache_path, embed_dataset
    from facebridge.evaluation.population import load_population

    settings = settings_from(args)
    folders = dict(spec.split("=", 1) for spec in (args.population or DEFAULT_POPULATIONS))
    names = list(folders)
    transfers = [tuple(t.split(":", 1)) for t in args.transfer or []] or [
        (names[0], names[1]),
        (names[1], names[0]),
    ]
    augment: dict[str, list[str]] = {}
    for spec in args.augment:
        fit, kind = spec.split(":", 1)
        augment.setdefault(fit, []).append(kind)
    needed = {n for t in transfers for n in t}
    missing = [
        (name, kind)
        for name in sorted(needed)
        for kind in [CLEAN, *augment.get(name, [])]
        if not all(dataset_cache_path(settings.cache_dir, name, m, kind).exists() for m in models)
    ]
    if missing:
        pipeline = open_pipeline(settings, models, args.detector)
        for name, kind in missing:
            embed_dataset(pipeline, Path(folders[name]), name, models, settings.cache_dir, kind)
    populations = {
        name: load_population(settings.cache_dir, name, models, augment.get(name, [])) for name in needed
    }
    return populations, transfers, augment


def evaluate_population(args: argparse.Namespace) -> int:
    from facebridge.evaluation.population_report import RESULT_HEADER, run_population_study

    models = [args.source, args.target]
    populations, transfers, augment = _populations(args, models)
    print("\n".join(RESULT_HEADER))
    run_population_study(
        populations,
        transfers,
        models,
        args.method,
        augment,
        pairs=[(args.source, args.target), (args.target, args.source)],
        calibration=args.calibration,
        log=lambda row: print(row, flush=True),
    )
    return 0


def report_population(args: argparse.Namespace) -> int:
    from facebridge.evaluation.population_report import (
        SECTION,
        far_ratios,
        population_markdown,
        run_population_study,
    )
    from facebridge.evaluation.sections import upsert_section

    populations, transfers, augment = _populations(args, args.model)
    results = run_population_study(
        populations,
        transfers,
        args.model,
        args.method,
        augment,
        calibration=args.calibration,
        log=lambda row: print(row, flush=True),
    )
    command = "facebridge " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    figures = args.out.with_suffix("")
    markdown = population_markdown(results, command, figures)
    upsert_section(args.out, SECTION, markdown)
    # the factors the shipped calibrations widen their FAR intervals by (scripts/fit_bank.py --far-factors)
    (figures / "population-far-factors.json").write_text(json.dumps(far_ratios(results), indent=2) + "\n")
    print(f"wrote the {SECTION} section of {args.out}")
    return 0
