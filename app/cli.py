"""The `facebridge` command: serve, manage models, embed datasets, evaluate."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.config import Settings

log = logging.getLogger("facebridge")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "models_dir", None):
        overrides["models_dir"] = args.models_dir
    return Settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_level=settings.log_level,
    )
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from app.vision.loading import open_registry

    registry = open_registry(_settings(args), load=False)
    print(f"{'id':<20} {'kind':<10} {'dim':>5} {'state':<12} file / reason")
    for model_id, status in registry.status.items():
        entry = status.entry
        detail = status.reason or entry.file
        print(f"{model_id:<20} {entry.kind:<10} {entry.dim or '':>5} {status.state:<12} {detail}")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from app.vision.fetch import FetchError, fetch_model
    from app.vision.manifest import load_manifest

    settings = _settings(args)
    manifest = load_manifest(settings.manifest_path)
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


def _pipeline(settings: Settings, model_ids: list[str], detector: str):  # type: ignore[no-untyped-def]
    from app.vision.loading import open_registry
    from app.vision.pipeline import FacePipeline

    registry = open_registry(settings, model_ids=[*model_ids, detector])
    for model_id in model_ids:
        registry.recognizer(model_id)  # raises with the reason if it is not loaded
    registry.detector(detector)
    return FacePipeline(registry)


def cmd_embed(args: argparse.Namespace) -> int:
    from app.embedding_cache import build_cache
    from app.evaluation.lfw import pair_images, read_pairs

    settings = _settings(args)
    pipeline = _pipeline(settings, [args.model], args.detector)
    out = args.out or settings.cache_dir / f"{args.dataset.name}-{args.model}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    only = pair_images(read_pairs(args.pairs)) if args.pairs else None
    cache = build_cache(pipeline, args.dataset, args.model, out, args.detector, only=only)
    print(f"{out}: {len(cache)} images, {int((~cache.detected).sum())} without a detected face")
    return 0


def cmd_evaluate_native(args: argparse.Namespace) -> int:
    from app.embedding_cache import build_cache
    from app.evaluation.lfw import pair_images, read_pairs
    from app.evaluation.native import default_cache_path, evaluate_native, format_report

    settings = _settings(args)
    pairs = read_pairs(args.lfw / "pairs.txt")
    images = pair_images(pairs)
    pipeline = _pipeline(settings, args.model, args.detector)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for model_id in args.model:
        out = default_cache_path(settings.cache_dir, model_id)
        cache = build_cache(pipeline, args.lfw, model_id, out, args.detector, only=images)
        misses = int((~cache.detected[[cache.index()[p] for p in images]]).sum())
        report = evaluate_native(cache, pairs)
        entry = pipeline.registry.manifest.get(model_id)
        reference = entry.lfw_reference if entry is not None else None
        lines.append(format_report(model_id, report, reference, misses))
        print(lines[-1], flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facebridge", description=__doc__)
    parser.add_argument("--verbose", "-v", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service (settings from FACEBRIDGE_* variables)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    models = sub.add_parser("models", help="list or install model files")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="every manifest entry and whether its file is installed")
    listing.add_argument("--models-dir", type=Path)
    listing.set_defaults(func=cmd_models_list)
    fetch = models_sub.add_parser("fetch", help="install model files, verifying their sha256")
    fetch.add_argument("ids", nargs="*", metavar="ID")
    fetch.add_argument(
        "--all", action="store_true", help="every entry (with --from: every entry found there)"
    )
    fetch.add_argument("--from", dest="source", type=Path, help="copy from this local folder")
    fetch.add_argument("--models-dir", type=Path)
    fetch.add_argument("--accept-unpinned", action="store_true")
    fetch.set_defaults(func=cmd_models_fetch)

    embed = sub.add_parser("embed", help="embed a dataset folder (one sub-folder per identity) into a cache")
    embed.add_argument("dataset", type=Path)
    embed.add_argument("--model", required=True)
    embed.add_argument("--out", type=Path)
    embed.add_argument("--detector", default="yunet")
    embed.add_argument("--pairs", type=Path, help="embed only the images this pairs file uses")
    embed.add_argument("--models-dir", type=Path)
    embed.set_defaults(func=cmd_embed)

    native = sub.add_parser(
        "evaluate-native", help="LFW 10-fold verification of recognizers in their own space"
    )
    native.add_argument("--model", action="append", required=True, help="repeat for several models")
    native.add_argument("--lfw", type=Path, required=True, help="LFW root holding pairs.txt")
    native.add_argument("--detector", default="yunet")
    native.add_argument("--models-dir", type=Path)
    native.set_defaults(func=cmd_evaluate_native)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
