"""`facebridge migrate`: a gallery of templates translated into another model's space, resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facebridge.cli.common import add_settings_options, settings_from


def cmd_migrate(args: argparse.Namespace) -> int:
    from facebridge.migration.memory import reuse_freed_buffers

    reuse_freed_buffers()  # before pyarrow loads

    from facebridge.mapping.bank import MappingBank
    from facebridge.migration.galleries import open_gallery
    from facebridge.migration.job import migrate

    settings = settings_from(args)
    mappings = settings.mappings_dir
    bank = MappingBank.load(mappings, settings.load_manifest())
    path = bank.find_path(args.source, args.target)
    if path is None:
        print(f"no map or chain of maps from {args.source} to {args.target} in {mappings}", file=sys.stderr)
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
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    migrate = sub.add_parser(
        "migrate", help="translate a gallery of templates (Parquet or .npy) into Parquet parts, resumable"
    )
    migrate.add_argument("--source", required=True)
    migrate.add_argument("--target", required=True)
    migrate.add_argument("input", type=Path, help="a .parquet file or a .npy matrix")
    migrate.add_argument(
        "output", type=Path, help="a folder for the Parquet parts (resumes if it holds some)"
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
        help="dask: Parquet partitions on a Dask cluster",
    )
    migrate.add_argument(
        "--scheduler", help="Dask scheduler address (default: a LocalCluster on this machine)"
    )
    migrate.add_argument("--workers", type=int, help="LocalCluster worker processes (default: CPU count)")
    add_settings_options(migrate)
    migrate.set_defaults(func=cmd_migrate)
