"""`facebridge models list|fetch|add`: the manifest's models, installed and verified."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facebridge.cli.common import (
    RUNTIME_FIX,
    add_settings_options,
    needs_onnxruntime,
    onnxruntime_installed,
    settings_from,
    verify_model_file,
)

if TYPE_CHECKING:
    from facebridge.config import Settings
    from facebridge.vision.model_probe import ProbeResult


def cmd_models_list(args: argparse.Namespace) -> int:
    """Every manifest entry and its file's state; needs no ONNX Runtime (nothing is loaded)."""
    settings = settings_from(args)
    print(f"{'id':<20} {'kind':<10} {'dim':>5} {'state':<12} file / reason")
    for entry in settings.load_manifest().models:
        status = verify_model_file(entry, settings.models_dir)
        detail = status.reason or entry.file
        print(f"{entry.id:<20} {entry.kind:<10} {entry.dim or '':>5} {status.state:<12} {detail}")
    if not onnxruntime_installed():
        print(f"note: no ONNX Runtime is installed, so no model can run: {RUNTIME_FIX}", file=sys.stderr)
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


def default_photos_dir() -> Path | None:
    """LFW beside a source checkout (../shared/datasets/lfw), the development photo set, if present."""
    candidate = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "lfw"
    return candidate if candidate.is_dir() else None


def _check_installable(settings: Settings, path: Path, model_id: str, replace: bool) -> None:
    """Refuse before the (slow) probe what would fail or clobber something after it."""
    from facebridge.vision.manifest import sha256_file
    from facebridge.vision.model_probe import ProbeError

    if settings.load_manifest().get(model_id) is not None and not replace:
        raise ProbeError(f"model id {model_id!r} is already in the manifest; choose another id or replace it")
    destination = settings.models_dir / path.name
    same_path = destination.is_file() and destination.resolve() == path.resolve()
    if destination.is_file() and not same_path and sha256_file(destination) != sha256_file(path):
        raise ProbeError(f"{destination} exists and is a different file; rename {path.name} first")


def add_model(
    settings: Settings,
    onnx_path: Path,
    model_id: str,
    photos_dir: Path | None = None,
    *,
    replace: bool = False,
    people: int = 120,
    per_person: int = 5,
    seed: int = 0,
) -> ProbeResult:
    """`facebridge models add FILE.onnx --id ID [--photos DIR]`: probe the file, copy it into the
    models folder (sha256-checked), and add its entry to the user manifest. Raises ProbeError with a
    message fit for the terminal (UserManifestError where the entry cannot be written). `photos_dir`
    defaults to the development LFW copy when there is one."""
    from facebridge.vision.fetch import FetchError, fetch_model
    from facebridge.vision.model_probe import ProbeError, propose_entry
    from facebridge.vision.user_manifest import check_entry, write_user_entry

    photos_dir = photos_dir or default_photos_dir()
    if photos_dir is None:
        raise ProbeError(
            "no labelled photos to probe with: give photos_dir (a folder per person, two or more photos each)"
        )
    _check_installable(settings, onnx_path, model_id, replace)
    result = propose_entry(
        onnx_path, model_id, photos_dir, settings=settings, people=people, per_person=per_person, seed=seed
    )
    try:
        fetch_model(check_entry(result.entry), settings.models_dir, onnx_path.parent, progress=False)
    except FetchError as exc:
        raise ProbeError(str(exc)) from exc
    write_user_entry(settings, result.entry, result.templates)
    return result


@needs_onnxruntime
def cmd_models_add(args: argparse.Namespace) -> int:
    """Probe an unknown recognizer, install it and write its entry into the user manifest."""
    from facebridge.vision.user_manifest import UserManifestError

    settings = settings_from(args)
    if args.photos is None and default_photos_dir() is None:
        print(
            "error: no labelled photos: pass --photos DIR (a folder per person, two or more photos each)",
            file=sys.stderr,
        )
        return 2
    try:
        result = add_model(
            settings,
            args.file,
            args.id,
            args.photos,
            replace=args.replace,
            people=args.people,
            per_person=args.per_person,
            seed=args.seed,
        )
    except UserManifestError as error:  # a ProbeError is one too
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.id}: chose among {len(result.table)} preprocessing candidates on {result.photos} photos of "
        f"{result.people} people in {result.photos_dir} (* = chosen)"
    )
    print(result.format_table())
    for note in result.notes:
        print(f"note: {note}")
    print(f"\nwrote {args.id} into {settings.user_manifest_path}:")
    for key, value in result.entry.items():
        print(f"  {key} = {value!r}")
    print("a running service loads it on restart; `facebridge models list` shows it")
    return 0


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
    add = models_sub.add_parser(
        "add",
        help="add a recognizer the manifest does not know: read its graph, choose its preprocessing on "
        "labelled photos, install it and write it into the user manifest",
    )
    add.add_argument("file", type=Path, metavar="FILE.onnx")
    add.add_argument("--id", required=True, help="the id the model will have (letters, digits, ._-)")
    add.add_argument(
        "--photos", type=Path, help="labelled photos: one sub-folder per person (default: ../shared LFW)"
    )
    add.add_argument("--people", type=int, default=120, help="people sampled from --photos")
    add.add_argument("--per-person", type=int, default=5, help="photos per person")
    add.add_argument("--seed", type=int, default=0)
    add.add_argument("--replace", action="store_true", help="replace an existing entry of this id")
    add_settings_options(add)
    add.set_defaults(func=cmd_models_add)
