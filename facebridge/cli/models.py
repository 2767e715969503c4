"""`facebridge models list|fetch|add`: the manifest's models, installed and verified."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facebridge.cli.common import add_settings_options, settings_from


def cmd_models_list(args: argparse.Namespace) -> int:
    from facebridge.vision.loading import open_registry

    registry = open_registry(settings_from(args), load=False)
    print(f"{'id':<20} {'kind':<10} {'dim':>5} {'state':<12} file / reason")
    for model_id, status in registry.status.items():
        entry = status.entry
        detail = status.reason or entry.file
        print(f"{model_id:<20} {entry.kind:<10} {entry.dim or '':>5} {status.state:<12} {detail}")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from facebridge.vision.fetch import FetchError, fetch_model

    settings = settings_from(args)
    manifest = settings.load_manifest()
    if args.all:
        entries = [m for m in manifest.models if args.source is None or (args.source / m.file).is_file()]
    else:
        unknown = [i for i in args.ids if manifest.get(i) is None]
        if unknown:
            print(f"unknown model id(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        entries = [m for m in manifest.models if m.id in args.ids]
    if not entries:
        print("nothing to fetch: name model ids or --all", file=sys.stderr)
        return 2
    failed = 0
    for entry in entries:
        try:
            path = fetch_model(entry, settings.models_dir, args.source, args.accept_unpinned)
            print(
                f"{entry.id}: {path} (sha256 verified)" if entry.sha256 else f"{entry.id}: {path} (unpinned)"
            )
        except FetchError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    models = sub.add_parser("models", help="list or install model files")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="every manifest entry and whether its file is installed")
    add_settings_options(listing)
    listing.set_defaults(func=cmd_models_list)
    fetch = models_sub.add_parser("fetch", help="install model files, verifying their sha256")
    fetch.add_argument("ids", nargs="*", metavar="ID")
    fetch.add_argument(
        "--all", action="store_true", help="every entry (with --from: every entry found there)"
    )
    fetch.add_argument("--from", dest="source", type=Path, help="copy from this local folder")
    fetch.add_argument("--accept-unpinned", action="store_true")
    add_settings_options(fetch)
    fetch.set_defaults(func=cmd_models_fetch)
