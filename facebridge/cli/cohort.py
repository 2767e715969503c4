"""`facebridge cohort build|show`: cohort files of the deployment's own people, for AS-norm.

    facebridge cohort build --model arcface-mbf128 ./photos --out cohorts/site-a
    facebridge cohort build --model arcface-mbf128 --out cohorts/site-a \
        'postgresql://app@db/idm?table=faces&id=user_id&column=template'
    facebridge cohort show cohorts/site-a.cohort.safetensors

Serve the folder of cohort files with FACEBRIDGE_COHORT_DIR; see facebridge/cohort/sources.py for how
each source is read and docs/thresholds.md for why a deployment wants its own cohort.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facebridge.cli.common import add_settings_options, settings_from

if TYPE_CHECKING:
    from facebridge.cohort.cohortfile import Cohort
    from facebridge.config import Settings
    from facebridge.mapping.mapfile import SpaceRef

PAIRS_PREFIX = "pairs:"
SOURCE_HELP = (
    "where the templates come from: a folder of photos (every image at any depth; faces are detected "
    "and embedded with --model), an (n, d) .npy of templates, a .parquet file (its embedding column), "
    "a PostgreSQL table as postgresql://user@host:port/db?table=T&id=KEY&column=C (as facebridge "
    "migrate names it), or pairs:PATH_OR_DSN for the templates recorded in the pair store"
)


class BuildError(Exception):
    """A reason to stop with one line on stderr (exit 2)."""


def manifest_space(settings: Settings, model: str) -> SpaceRef:
    """The model's space as the manifest pins it (dim and weights' sha256)."""
    from facebridge.mapping.mapfile import SpaceRef

    entry = settings.load_manifest().get(model)
    if entry is None:
        raise BuildError(
            f"unknown model {model} (not in {settings.manifest_path}; see facebridge models list)"
        )
    if entry.kind != "recognizer":
        raise BuildError(f"{model} is a {entry.kind}, not a recognizer")
    if entry.dim is None or entry.sha256 is None:
        raise BuildError(f"{model} has no dim or sha256 pinned in the manifest: a cohort needs both")
    return SpaceRef(model=model, dim=entry.dim, sha256=entry.sha256)


def build(args: argparse.Namespace) -> Cohort:
    """The cohort of args.source, by its kind."""
    from facebridge.cohort import sources

    settings = settings_from(args)
    source: str = args.source
    max_size = args.max if args.max > 0 else None
    space = manifest_space(settings, args.model)
    if source.startswith(PAIRS_PREFIX):
        where = source[len(PAIRS_PREFIX) :]
        if not where:
            raise BuildError(
                "pairs: needs the pair store's SQLite file or PostgreSQL DSN (pairs:PATH_OR_DSN)"
            )
        return sources.from_pair_store(where, args.model, space, max_size, args.seed)
    if source.startswith(("postgresql://", "postgres://")):
        return sources.from_postgres(source, space, max_size, args.seed, args.id_column, args.column)
    path = Path(source).expanduser()
    if path.is_dir():
        from facebridge.cli.common import open_pipeline, require_onnxruntime

        require_onnxruntime("cohort build from photos")
        if not sources.list_photos(path):  # said before the models load
            raise BuildError(f"{source}: no photos (.jpg, .jpeg, .png, .bmp, .webp) in it or below it")
        pipeline = open_pipeline(settings, [args.model], args.detector)
        return sources.from_photos(pipeline, path, args.model, max_size, args.seed, args.detector)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise BuildError(f"{source}: not a folder, .npy, .parquet, postgresql:// URL or pairs:PATH_OR_DSN")
    if not path.is_file():
        raise BuildError(f"{source}: no such file")
    if suffix == ".npy":
        return sources.from_npy(path, space, max_size, args.seed)
    return sources.from_parquet(path, space, args.column, max_size, args.seed)


def _errors() -> tuple[type[BaseException], ...]:
    """What a bad source, model or table raises: said in one line, never a traceback."""
    from facebridge.cohort.cohortfile import CohortError
    from facebridge.exceptions import FacebridgeError
    from facebridge.pairs.migrations import PairStoreError

    errors: list[type[BaseException]] = [BuildError, CohortError, FacebridgeError, PairStoreError, OSError]
    try:
        import psycopg

        from facebridge.migration.pg_table import TableError

        errors += [TableError, psycopg.Error]
    except ImportError:
        pass
    return tuple(errors)


def cmd_build(args: argparse.Namespace) -> int:
    from facebridge.cohort.cohortfile import RECOMMENDED_COHORT, SMALL_COHORT_NOTE, save_cohort

    if args.max < 0:
        print("facebridge cohort build: --max must be 0 (no sampling) or more", file=sys.stderr)
        return 2
    try:
        cohort = build(args)
        written = save_cohort(args.out, cohort)
    except _errors() as exc:
        print(f"facebridge cohort build: {_one_line(exc)}", file=sys.stderr)
        return 2
    p = cohort.meta.provenance
    sampled = f" (a seeded sample; {p.rows_read} rows read)" if p.sampled else ""
    print(f"{written}: {cohort.model}, {p.count} templates{sampled} from {p.kind} {p.source}")
    if p.count < RECOMMENDED_COHORT:
        print(f"note: {p.count} templates: {SMALL_COHORT_NOTE}; give more if you have them", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from facebridge.cohort.cohortfile import CohortError, load_cohort

    try:
        cohort = load_cohort(args.file)
    except (CohortError, OSError) as exc:
        print(f"facebridge cohort show: {_one_line(exc)}", file=sys.stderr)
        return 2
    shown = cohort.meta.model_dump(mode="json", exclude={"groups"})
    groups = cohort.meta.groups
    # a count, not every template's person: a cohort of 1,000 photos would print 1,000 names
    shown["people"] = len(set(groups)) if groups is not None else None
    print(json.dumps(shown, indent=2))
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    cohort = sub.add_parser(
        "cohort",
        help="build or inspect a cohort file (the deployment's own people, for AS-norm scores)",
        description=__doc__.split("\n\n")[0],
    )
    commands = cohort.add_subparsers(dest="cohort_command", required=True)

    build_parser = commands.add_parser(
        "build",
        help="write a cohort file of one model's templates from photos, a .npy, a .parquet, a PostgreSQL "
        "table or the pair store",
        description="Write a cohort file (NAME.cohort.safetensors) of --model's templates of the "
        "deployment's own population. SOURCE is " + SOURCE_HELP.split(": ", 1)[1] + ".",
    )
    build_parser.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    build_parser.add_argument(
        "--model", required=True, help="the recognizer whose space the templates are in (a manifest id)"
    )
    build_parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="the cohort file to write (.cohort.safetensors is added when missing); put it in "
        "FACEBRIDGE_COHORT_DIR for the service",
    )
    build_parser.add_argument(
        "--max",
        type=int,
        default=1000,
        help="keep a seeded sample of at most this many templates (default 1000; 0: keep all)",
    )
    build_parser.add_argument(
        "--seed", type=int, default=0, help="the seed of that sample (default 0; the file's note names it)"
    )
    build_parser.add_argument(
        "--column",
        help=".parquet: the embedding column (default 'embedding'); PostgreSQL: the template column "
        "(overrides ?column=)",
    )
    build_parser.add_argument(
        "--id",
        dest="id_column",
        metavar="KEY",
        help="PostgreSQL: the table's unique key, the order rows are read in (overrides ?id=)",
    )
    build_parser.add_argument(
        "--detector", default="yunet", help="photo folders: the face detector (default yunet)"
    )
    add_settings_options(build_parser)
    build_parser.set_defaults(func=cmd_build)

    show = commands.add_parser(
        "show", help="verify a cohort file and print its metadata (space, provenance) as JSON"
    )
    show.add_argument("file", type=Path, help="a .cohort.safetensors file")
    show.set_defaults(func=cmd_show)
