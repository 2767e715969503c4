"""`facebridge calibrate`: thresholds measured on the deployment's own people, overriding the shipped ones.

    facebridge calibrate --population photos/ [--model M ...] --out deployment.calibration.json
    facebridge calibrate --pairs pairs.db --out deployment.calibration.json
    facebridge calibrate --cache cache/lfw-arcface-mbf128.npz --dataset lfw --out mappings/spaces

From a folder of photos (one sub-folder per person) or the pair store's subjects, every same-space and
direct-map comparison gets raw and AS-norm thresholds with their intervals (facebridge/cohort/
deployment.py). Point FACEBRIDGE_CALIBRATION_FILE at the file and reload: answers then name it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facebridge.cli.common import add_settings_options, needs_onnxruntime, settings_from

if TYPE_CHECKING:
    from facebridge.config import Settings
    from facebridge.evaluation.population import Population
    from facebridge.pairs.rows import PairSet


@needs_onnxruntime
def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.cache is not None:
        from facebridge.cli.fit import cmd_calibrate_space

        args.out = args.out or Path("mappings/spaces")
        return cmd_calibrate_space(args)
    if args.out is None:
        print("error: --out FILE is required (the calibration file to write)", file=sys.stderr)
        return 2
    from facebridge.cohort.calibration_set import save_calibration_set
    from facebridge.cohort.deployment import calibrate_population, merge_sets, population_from_pairs
    from facebridge.mapping.bank import MappingBank

    settings = settings_from(args)
    bank = MappingBank.load(settings.mappings_dir, settings.load_manifest())
    try:
        if args.population is not None:
            models = args.model or sorted(bank.space_calibrations)
            population = _embedded_population(args, settings, models)
            result = calibrate_population(
                bank, population, models, args.top_k, _share(args), args.max_cohort, args.seed
            )
        else:
            sets = []
            for pairs in _recorded_pairs(args, settings):
                population = population_from_pairs(pairs, f"pairs:{pairs.source_model}+{pairs.target_model}")
                models = [pairs.source_model, pairs.target_model]
                sets.append(
                    calibrate_population(
                        bank, population, models, args.top_k, _share(args), args.max_cohort, args.seed
                    )
                )
            result = merge_sets(sets)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    written = save_calibration_set(args.out, result)
    people = ", ".join(
        f"{p.name}: {p.identities} people, {p.images} photos scored" for p in result.populations
    )
    print(f"wrote {written}: {len(result.entries)} comparisons ({people})")
    print(f"serve it with FACEBRIDGE_CALIBRATION_FILE={written} (then POST /admin/reload-mappings or SIGHUP)")
    return 0


def _share(args: argparse.Namespace) -> float | None:
    """--top-k-share, where 0 means a fixed K (--top-k)."""
    share: float = args.top_k_share
    return share if share > 0 else None


def _embedded_population(args: argparse.Namespace, settings: Settings, models: list[str]) -> Population:
    """The folder's photos embedded by every model (cached and resumable, like the studies' caches)."""
    from facebridge.cli.common import open_pipeline
    from facebridge.dataset_embedding import embed_dataset
    from facebridge.evaluation.population import load_population

    folder: Path = args.population
    if not folder.is_dir():
        raise ValueError(f"--population {folder}: not a folder (one sub-folder of photos per person)")
    from facebridge.cohort.deployment import MIN_PEOPLE
    from facebridge.embedding_cache import list_images

    people = {path.split("/", 1)[0] for path in list_images(folder) if "/" in path}
    if len(people) < MIN_PEOPLE:
        raise ValueError(
            f"--population {folder}: {len(people)} people (sub-folders of photos); a calibration needs at "
            f"least {MIN_PEOPLE}"
        )
    name = args.name or f"deployment-{folder.resolve().name}"
    pipeline = open_pipeline(settings, models, args.detector)
    embed_dataset(pipeline, folder, name, models, settings.cache_dir, progress=sys.stderr.isatty())
    return load_population(settings.cache_dir, name, models)


def _recorded_pairs(args: argparse.Namespace, settings: Settings) -> list[PairSet]:
    """Every model pair in the pair store (--pairs, else the service's), oriented as first recorded."""
    from facebridge.pairs.migrations import PairStoreError
    from facebridge.pairs.store import open_store

    try:
        store = open_store(args.pairs or settings)
    except PairStoreError as error:
        raise ValueError(str(error)) from None
    try:
        return [store.read(s.source_model, s.target_model) for s in store.stats()]
    finally:
        store.close()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = sub.add_parser(
        "calibrate",
        help="thresholds (raw and AS-norm) measured on your own labelled people; overrides the shipped ones",
        description=__doc__.split("\n\n")[0],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--population", type=Path, help="a folder with one sub-folder of photos per person")
    source.add_argument(
        "--pairs",
        nargs="?",
        const="",
        help="the pair store's subjects: a SQLite file or postgresql:// DSN (no value: the service's store)",
    )
    source.add_argument(
        "--cache",
        type=Path,
        help="an embedding cache of one model (facebridge embed): writes that space's same-space "
        "calibration file into --out (default mappings/spaces), the format the shipped spaces use",
    )
    parser.add_argument("--out", type=Path, help="the calibration file to write (*.calibration.json)")
    parser.add_argument("--dataset", default="custom", help="--cache: the data's name in the file")
    parser.add_argument("--max-images", type=int, default=8000, help="--cache: most images used")
    parser.add_argument(
        "--model", action="append", help="recognizer(s) to calibrate; default every one with maps"
    )
    parser.add_argument("--name", help="a name for the population in the file (default: the folder's)")
    parser.add_argument("--detector", default="yunet", help="face detector for the photos (default yunet)")
    parser.add_argument(
        "--top-k",
        type=int,
        default=100,
        help="AS-norm: the most cohort scores per side (default 100; every K with --top-k-share 0)",
    )
    parser.add_argument(
        "--top-k-share",
        type=float,
        default=0.05,
        help="AS-norm: K as this share of each cohort's size, at least 10 and at most --top-k "
        "(default 0.05, as the shipped set; 0: K = --top-k)",
    )
    parser.add_argument("--max-cohort", type=int, default=1000, help="most cohort photos (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="the draw of scored and cohort people")
    add_settings_options(parser)
    parser.set_defaults(func=cmd_calibrate)
