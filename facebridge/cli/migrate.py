"""`facebridge migrate`: a gallery of templates translated into another model's space, resumable."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facebridge.cli.common import add_settings_options, settings_from

if TYPE_CHECKING:
    from facebridge.mapping.bank import MapPath


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.input.startswith(("postgresql://", "postgres://")):
        return migrate_postgres(args)
    if args.output is None:
        print("a Parquet or .npy gallery needs an OUTPUT folder", file=sys.stderr)
        return 2
    args.input, args.output = Path(args.input), Path(args.output)
    from facebridge.migration.memory import reuse_freed_buffers

    reuse_freed_buffers()  # before pyarrow loads

    from facebridge.migration.galleries import open_gallery
    from facebridge.migration.job import migrate

    path = map_path(args)
    if path is None:
        return 2
    if args.engine == "dask":
        from facebridge.migration.distributed import migrate_dask

        if args.input.suffix == ".npy":
            print("the dask engine reads Parquet; convert the .npy or use --engine stream", file=sys.stderr)
            return 2
        result = migrate_dask(
            args.input, path, args.output, args.id_column, args.embedding_column, args.scheduler, args.workers
        )
    else:
        gallery = open_gallery(args.input, args.id_column, args.embedding_column, args.ids)
        result = migrate(gallery, args.input, path, args.output, args.chunk_rows, progress=not args.quiet)
    rate = result.rows / result.seconds if result.seconds else float("inf")
    print(
        f"{result.rows} rows -> {result.output} in {result.parts} parts via {' then '.join(path.ids)} "
        f"({result.resumed_parts} parts kept from an earlier run; {result.seconds:.1f} s, "
        f"{rate:,.0f} rows/s); ids and row counts checked"
    )
    print(judgement(args))
    return 0


def judgement(args: argparse.Namespace) -> str:
    """How migrated templates will be judged against the target's own: the cross calibration of the
    map (AS-norm where a cohort serves it), which the caller should ask for by comparing them as
    source-model templates or by a deployment calibration of the migrated gallery."""
    from facebridge.bridge import Bridge
    from facebridge.mapping.bank import MappingBank

    bank = MappingBank.from_settings(settings_from(args))
    return "migrated vs native templates, " + Bridge(bank).judgement(args.source, args.target)


def map_path(args: argparse.Namespace) -> MapPath | None:
    """The map (or chain) from --source to --target in the configured bank; None, said on stderr,
    where there is none."""
    from facebridge.mapping.bank import MappingBank

    settings = settings_from(args)
    mappings = settings.mappings_dir
    path = MappingBank.load(mappings, settings.load_manifest()).find_path(args.source, args.target)
    if path is None:
        print(f"no map or chain of maps from {args.source} to {args.target} in {mappings}", file=sys.stderr)
    return path


def migrate_postgres(args: argparse.Namespace) -> int:
    """`facebridge migrate ... postgresql://...?table=&id=&column= --to-column NAME` (see
    facebridge/migration/postgres.py); one-line errors for a bad URL, server, table or column."""
    from facebridge.migration.pg_table import TableError, TableRef
    from facebridge.migration.postgres import MigrationError, open_migration

    try:
        import psycopg
    except ImportError:
        print("PostgreSQL galleries need psycopg 3: pip install 'facebridge[postgres]'", file=sys.stderr)
        return 2
    path = map_path(args)
    if path is None:
        return 2
    if not args.to_column:
        print("a PostgreSQL gallery needs --to-column (the new column to fill)", file=sys.stderr)
        return 2
    try:
        ref = TableRef.parse(args.input, args.id_column_pg, args.column)
        engine = "dask" if args.engine == "dask" else "process"
        workers = args.workers or (1 if engine == "process" or args.scheduler else os.cpu_count() or 1)
        job = open_migration(
            args.design, ref, path, args.to_column, to_kind=args.to_type, batch_rows=args.batch_rows,
            strict=args.strict, max_passes=args.max_passes, progress=not args.quiet, pause=args.pause,
            workers=workers, engine=engine, scheduler=args.scheduler,
        )  # fmt: skip
        if args.dry_run:
            print("\n".join(job.dry_run()))
            return 0
        if args.swap:
            retire_as = args.retire_as or f"{ref.column}_{_slug(args.source)}"
            verification = job.swap(retire_as, args.swap_also or [])
            print(
                f"swapped: {ref.qualified}.{ref.column} now holds the {args.target} templates; the "
                f"{args.source} ones are kept in {retire_as}. {verification.describe()}"
            )
            return 0
        result = job.run()
        for note in getattr(job, "notes", []):
            print(f"note: {note}", file=sys.stderr)
    except (TableError, MigrationError, ValueError) as exc:
        print(f"facebridge migrate: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, MigrationError) else 2
    except psycopg.Error as exc:
        print(f"facebridge migrate: PostgreSQL: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    rate = result.rows_written / result.seconds if result.seconds else float("inf")
    resumed = f", resumed after {result.resumed_from!r}" if result.resumed_from else ""
    print(
        f"{result.rows_written} rows translated into {ref.qualified}.{args.to_column} via "
        f"{' then '.join(path.ids)} in {result.batches} batches, {result.passes} passes{resumed} "
        f"({result.seconds:.1f} s, {rate:,.0f} rows/s)"
    )
    for key, reason in result.problems[:20]:
        print(f"  not translated: {ref.id_column}={key}: {reason}")
    if len(result.problems) > 20:
        print(f"  ... {len(result.problems) - 20} more, all in facebridge_migration_problems")
    print(result.verification.describe())
    print(judgement(args))
    return 0 if result.verification.ok else 1


def _slug(model: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in model.lower())


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    migrate = sub.add_parser(
        "migrate",
        help="translate a gallery of templates: Parquet or .npy into Parquet parts, or a PostgreSQL "
        "table's column into a new column, resumable",
    )
    migrate.add_argument("--source", required=True)
    migrate.add_argument("--target", required=True)
    migrate.add_argument(
        "input",
        help="a .parquet file, a .npy matrix, or postgresql://user@host/db?table=T&id=KEY&column=C",
    )
    migrate.add_argument(
        "output", nargs="?", help="a folder for the Parquet parts (resumes if it holds some)"
    )
    migrate.add_argument("--id-column", default="id")
    migrate.add_argument("--embedding-column", default="embedding")
    migrate.add_argument("--ids", type=Path, help="for .npy input: a .npy of ids (default: row numbers)")
    migrate.add_argument("--chunk-rows", type=int, default=50_000, help="rows per chunk and part")
    migrate.add_argument("--quiet", action="store_true")
    migrate.add_argument(
        "--engine",
        choices=["stream", "dask"],
        default="stream",
        help="dask: Parquet partitions, or a PostgreSQL table's key ranges, as tasks on a Dask cluster",
    )
    migrate.add_argument(
        "--scheduler", help="Dask scheduler address (default: a LocalCluster on this machine)"
    )
    migrate.add_argument(
        "--workers", type=int,
        help="PostgreSQL: worker processes over disjoint key ranges (default 1); dask: LocalCluster "
        "worker processes (default: CPU count)",
    )  # fmt: skip
    pg = migrate.add_argument_group("PostgreSQL galleries")
    pg.add_argument("--to-column", help="the column to fill with translated templates (added if missing)")
    pg.add_argument(
        "--to-type", choices=["real[]", "double precision[]", "vector", "bytea"],
        help="its type when it is added (default: the source column's)",
    )  # fmt: skip
    pg.add_argument("--id", dest="id_column_pg", help="the table's unique key (or ?id= in the URL)")
    pg.add_argument("--column", help="the source template column (or ?column= in the URL)")
    pg.add_argument("--batch-rows", type=int, default=5_000, help="rows per batch and transaction")
    pg.add_argument(
        "--design", choices=["staged", "in-place"], default="staged",
        help="staged (default): translations in a side table, written into the table by --swap's one "
        "UPDATE; in-place: every row updated batch by batch, a short --swap (docs/migration.md)",
    )  # fmt: skip
    pg.add_argument(
        "--pause", type=float, default=0.0, metavar="SECONDS",
        help="sleep between batches, to spare a busy production database (default 0)",
    )  # fmt: skip
    pg.add_argument("--max-passes", type=int, default=5, help="passes over rows that changed meanwhile")
    pg.add_argument("--strict", action="store_true", help="stop at the first value that cannot be translated")
    pg.add_argument("--dry-run", action="store_true", help="print what would be done; write nothing")
    pg.add_argument(
        "--swap", action="store_true",
        help="switch over in one transaction: the source column is renamed to --retire-as and the "
        "translated column takes its name",
    )  # fmt: skip
    pg.add_argument("--retire-as", help="the source column's new name at --swap (default: COLUMN_SOURCE)")
    pg.add_argument(
        "--swap-also", action="append", metavar="SQL",
        help="a statement run in the swap's transaction (e.g. the identity system's model setting)",
    )  # fmt: skip
    add_settings_options(migrate)
    migrate.set_defaults(func=cmd_migrate)
