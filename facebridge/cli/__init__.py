"""The `facebridge` command: serve, manage models, embed datasets, evaluate."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from facebridge.config import Settings

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
        "facebridge.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.workers,
        log_level=settings.log_level,
        access_log=False,  # the service logs each request itself, with its request id
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from facebridge.vision.loading import open_registry

    registry = open_registry(_settings(args), load=False)
    print(f"{'id':<20} {'kind':<10} {'dim':>5} {'state':<12} file / reason")
    for model_id, status in registry.status.items():
        entry = status.entry
        detail = status.reason or entry.file
        print(f"{model_id:<20} {entry.kind:<10} {entry.dim or '':>5} {status.state:<12} {detail}")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from facebridge.vision.fetch import FetchError, fetch_model

    settings = _settings(args)
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


def _pipeline(settings: Settings, model_ids: list[str], detector: str):  # type: ignore[no-untyped-def]
    from facebridge.vision.loading import open_registry
    from facebridge.vision.pipeline import FacePipeline

    registry = open_registry(settings, model_ids=[*model_ids, detector])
    for model_id in model_ids:
        registry.recognizer(model_id)  # raises with the reason if it is not loaded
    registry.detector(detector)
    return FacePipeline(registry)


def cmd_embed(args: argparse.Namespace) -> int:
    from facebridge.embedding_cache import build_cache
    from facebridge.evaluation.lfw import pair_images, read_pairs

    settings = _settings(args)
    pipeline = _pipeline(settings, [args.model], args.detector)
    out = args.out or settings.cache_dir / f"{args.dataset.name}-{args.model}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    only = pair_images(read_pairs(args.pairs)) if args.pairs else None
    cache = build_cache(pipeline, args.dataset, args.model, out, args.detector, only=only)
    print(f"{out}: {len(cache)} images, {int((~cache.detected).sum())} without a detected face")
    return 0


def cmd_embed_dataset(args: argparse.Namespace) -> int:
    from facebridge.dataset_embedding import CLEAN, embed_dataset

    settings = _settings(args)
    pipeline = _pipeline(settings, args.model, args.detector)
    name = args.name or args.dataset.name
    for augmentation in args.augment or [CLEAN]:
        caches = embed_dataset(
            pipeline,
            args.dataset,
            name,
            args.model,
            settings.cache_dir,
            augmentation,
            args.seed,
            args.detector,
            subset=args.subset,
        )
        for model_id, cache in caches.items():
            print(f"{name} {augmentation} {model_id}: {len(cache)} rows", flush=True)
    return 0


def cmd_evaluate_native(args: argparse.Namespace) -> int:
    from facebridge.embedding_cache import build_cache
    from facebridge.evaluation.lfw import pair_images, read_pairs
    from facebridge.evaluation.native import default_cache_path, evaluate_native, format_report

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


def _lfw_caches(args: argparse.Namespace, model_ids: list[str]):  # type: ignore[no-untyped-def]
    """Embedding caches of every LFW pair photo per model: reused when present, built otherwise."""
    from facebridge.embedding_cache import EmbeddingCache, build_cache
    from facebridge.evaluation.lfw import pair_images, read_pairs
    from facebridge.evaluation.native import default_cache_path

    settings = _settings(args)
    pairs = read_pairs(args.lfw / "pairs.txt")
    images = pair_images(pairs)
    caches: dict[str, EmbeddingCache] = {}
    missing = []
    for model_id in model_ids:
        path = default_cache_path(settings.cache_dir, model_id)
        cached = EmbeddingCache.load(path) if path.exists() else None
        if cached is not None and set(images) <= set(cached.index()):
            caches[model_id] = cached
        else:
            missing.append(model_id)
    if missing:
        pipeline = _pipeline(settings, missing, args.detector)
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        for model_id in missing:
            out = default_cache_path(settings.cache_dir, model_id)
            caches[model_id] = build_cache(pipeline, args.lfw, model_id, out, args.detector, only=images)
    return caches, pairs


def _single_method(args: argparse.Namespace) -> None:
    """The LFW-fold protocol studies one method; --method may be repeated only for --protocol population."""
    methods = args.method or ["ridge"]
    if len(methods) > 1:
        raise SystemExit("--protocol lfw-folds takes one --method")
    args.method = methods[0]
    if args.lfw is None:
        raise SystemExit("--protocol lfw-folds needs --lfw")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from facebridge.cli_population import POPULATION, evaluate_population
    from facebridge.evaluation.interchange import learning_curve, paired_lfw, study_pair
    from facebridge.evaluation.report import CURVE_SIZES, fitter_for

    if args.protocol == POPULATION:
        args.method = args.method or ["ridge", "residual-mlp"]
        return evaluate_population(args)
    _single_method(args)

    caches, pairs = _lfw_caches(args, [args.source, args.target])
    data = paired_lfw(caches[args.source], caches[args.target], pairs)
    study = study_pair(data, fitter_for(args.method), args.method, pairing=args.pairing)
    names = {
        "native_a": f"native {args.source}",
        "native_b": f"native {args.target}",
        "mapped": f"mapped {args.source}→{args.target}",
        "cross": f"cross {args.source}→{args.target}",
        "reverse_mapped": f"mapped {args.target}→{args.source}",
        "reverse_cross": f"cross {args.target}→{args.source}",
        "fused": "cross with both maps",
    }
    print(f"method {args.method}, fitting pairs {args.pairing}; LFW 10-fold, maps fitted per fold")
    print("| comparison | accuracy (%) | AUC | EER (%) | TAR@FAR 1e-3 (%) | TAR@FAR 1e-4 (%) |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label in names.items():
        m = study.metrics[key]
        print(
            f"| {label} | {m.accuracy * 100:.2f} ± {m.accuracy_std * 100:.2f} | {m.auc:.4f} "
            f"| {m.eer * 100:.2f} | {m.tar_far_1e3 * 100:.2f} | {m.tar_far_1e4 * 100:.2f} |"
        )
    print(
        f"R² {args.source}→{args.target} {study.r2:.3f}, {args.target}→{args.source} {study.r2_reverse:.3f}"
    )
    if args.learning_curve:
        print("| fitting pairs | mapped (%) | cross (%) |")
        print("|---:|---:|---:|")
        for point in learning_curve(data, fitter_for(args.method), CURVE_SIZES, pairing=args.pairing):
            print(f"| {point.fitting_pairs} | {point.mapped * 100:.2f} | {point.cross * 100:.2f} |")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from facebridge.cli_population import POPULATION, report_population
    from facebridge.evaluation.report import run_study, write_report

    if args.protocol == POPULATION:
        args.method = args.method or ["ridge", "residual-mlp"]
        return report_population(args)
    _single_method(args)

    caches, pairs = _lfw_caches(args, args.model)
    compare = [tuple(spec.split(":", 1)) for spec in args.compare]
    study = run_study(caches, pairs, args.method, compare_pairs=compare)
    command = "facebridge " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(study, args.out, command)
    print(f"wrote {args.out}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from facebridge.migration.memory import reuse_freed_buffers

    reuse_freed_buffers()  # before pyarrow loads

    from facebridge.mapping.bank import MappingBank
    from facebridge.migration.galleries import open_gallery
    from facebridge.migration.job import migrate

    settings = _settings(args)
    mappings = args.mappings or settings.mappings_dir
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


def _space_for(settings: Settings, model: str, sha256: str | None, dim: int):  # type: ignore[no-untyped-def]
    """A SpaceRef for .npy input: the hash comes from --*-sha256 or the manifest's pin."""
    from facebridge.mapping.mapfile import SpaceRef

    entry = settings.load_manifest().get(model)
    digest = sha256 or (entry.sha256 if entry is not None else None)
    if digest is None:
        raise SystemExit(
            f"error: no sha256 known for {model}: pass it with --source-sha256 / --target-sha256"
        )
    return SpaceRef(model=model, dim=dim, sha256=digest)


def cmd_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from facebridge.embedding_cache import EmbeddingCache
    from facebridge.mapping.fitting import PairedEmbeddings, fit_map, pair_caches
    from facebridge.mapping.mapfile import map_filename, save_map

    settings = _settings(args)
    if args.from_heads:
        from facebridge.cli_methods import fit_from_heads

        return fit_from_heads(args, settings)
    if args.source_cache and args.target_cache:
        data = pair_caches(
            EmbeddingCache.load(args.source_cache), EmbeddingCache.load(args.target_cache), args.dataset
        )
    elif args.source_npy and args.target_npy and args.source_model and args.target_model:
        source, target = np.load(args.source_npy), np.load(args.target_npy)
        labelled = args.labels is not None
        identities = np.load(args.labels).astype(str) if labelled else np.arange(len(source)).astype(str)
        data = PairedEmbeddings(
            source,
            target,
            identities,
            _space_for(settings, args.source_model, args.source_sha256, source.shape[1]),
            _space_for(settings, args.target_model, args.target_sha256, target.shape[1]),
            args.dataset,
            labelled,
        )
    else:
        print(
            "error: give --source-cache and --target-cache, or --source-npy, --target-npy, "
            "--source-model and --target-model",
            file=sys.stderr,
        )
        return 2
    params = {"alphas": (args.alpha,)} if args.alpha is not None and args.method == "ridge" else {}
    fitted = fit_map(data, args.method, params, args.heldout, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / map_filename(data.source_space.model, data.target_space.model)
    meta = save_map(path, fitted.meta, fitted.weight, fitted.bias)
    q = meta.quality
    print(f"{path}: {meta.id} method {meta.method} {meta.fitted or ''}")
    print(
        f"  held-out: {meta.provenance.heldout_identities} identities, "
        f"{meta.provenance.heldout_images} images; "
        f"mean cosine {q.mean_cosine:.4f}, R2 {q.r2:.4f}"
    )
    if q.accuracy_cross is not None:
        print(
            f"  accuracy: source native {q.accuracy_source_native:.4f}, "
            f"target native {q.accuracy_target_native:.4f}, "
            f"mapped {q.accuracy_mapped:.4f}, cross {q.accuracy_cross:.4f} ({q.verification_pairs} pairs)"
        )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from facebridge.embedding_cache import EmbeddingCache
    from facebridge.mapping.mapfile import SPACE_SUFFIX, save_space
    from facebridge.mapping.spaces import calibrate_space

    space = calibrate_space(EmbeddingCache.load(args.cache), args.dataset, args.max_images)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{space.space.model}{SPACE_SUFFIX}"
    save_space(path, space)
    points = ", ".join(
        f"{k} {v.threshold:.4f} (TAR {v.tar:.4f})" for k, v in space.calibration.thresholds.items()
    )
    print(f"{path}: {space.images} images, {space.calibration.impostor_pairs} impostor pairs; {points}")
    return 0


def _methods() -> tuple[str, ...]:
    from facebridge.evaluation.report import METHODS

    return METHODS


def build_parser() -> argparse.ArgumentParser:
    from facebridge.cli_population import add_population_arguments

    parser = argparse.ArgumentParser(prog="facebridge", description=__doc__)
    parser.add_argument("--verbose", "-v", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service (settings from FACEBRIDGE_* variables)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="default FACEBRIDGE_WORKERS or 1")
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

    many = sub.add_parser(
        "embed-dataset",
        help="embed a labelled photo folder with several models, clean or augmented, into shared caches",
    )
    many.add_argument("dataset", type=Path, help="one sub-folder per identity")
    many.add_argument("--name", help="dataset name in cache file names (default: the folder's name)")
    many.add_argument("--model", action="append", required=True, help="repeat for several models")
    many.add_argument(
        "--augment", action="append", help="'clean' or an augmentation kind; repeat (default clean)"
    )
    many.add_argument("--seed", type=int, default=0)
    many.add_argument("--subset", type=int, help="only this many photos (seeded draw, same for every kind)")
    many.add_argument("--detector", default="yunet")
    many.add_argument("--models-dir", type=Path)
    many.set_defaults(func=cmd_embed_dataset)

    native = sub.add_parser(
        "evaluate-native", help="LFW 10-fold verification of recognizers in their own space"
    )
    native.add_argument("--model", action="append", required=True, help="repeat for several models")
    native.add_argument("--lfw", type=Path, required=True, help="LFW root holding pairs.txt")
    native.add_argument("--detector", default="yunet")
    native.add_argument("--models-dir", type=Path)
    native.set_defaults(func=cmd_evaluate_native)
    evaluate = sub.add_parser(
        "evaluate", help="LFW interchangeability of two models: maps fitted per fold, native/mapped/cross"
    )
    evaluate.add_argument("--source", required=True)
    evaluate.add_argument("--target", required=True)
    evaluate.add_argument("--lfw", type=Path, help="LFW root holding pairs.txt (--protocol lfw-folds)")
    evaluate.add_argument(
        "--method",
        action="append",
        choices=list(_methods()),
        help="default ridge; with --protocol population repeat to choose per pair on validation "
        "(default ridge and residual-mlp)",
    )
    evaluate.add_argument("--pairing", default="same-image", choices=["same-image", "centroid"])
    evaluate.add_argument("--learning-curve", action="store_true")
    evaluate.add_argument("--detector", default="yunet")
    evaluate.add_argument("--models-dir", type=Path)
    add_population_arguments(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    from facebridge.cli_methods import register as register_method_studies

    register_method_studies(sub)

    report = sub.add_parser("report", help="the interchangeability study of several models, as Markdown")
    report.add_argument("--lfw", type=Path, help="LFW root holding pairs.txt (--protocol lfw-folds)")
    report.add_argument("--model", action="append", required=True, help="repeat for several models")
    report.add_argument(
        "--method", action="append", choices=list(_methods()), help="as for evaluate (default ridge)"
    )
    report.add_argument(
        "--compare", action="append", default=[], metavar="A:B", help="pairs for method comparison and curves"
    )
    report.add_argument("--out", type=Path, default=Path("docs/interchangeability.md"))
    report.add_argument("--command-line", help=argparse.SUPPRESS)
    report.add_argument("--detector", default="yunet")
    report.add_argument("--models-dir", type=Path)
    add_population_arguments(report)
    report.set_defaults(func=cmd_report)

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
    migrate.add_argument("--mappings", type=Path, help="default FACEBRIDGE_MAPPINGS_DIR")
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
    migrate.add_argument("--models-dir", type=Path)
    migrate.set_defaults(func=cmd_migrate)

    fit = sub.add_parser(
        "fit", help="fit a map between two spaces (held-out quality and calibration included)"
    )
    fit.add_argument(
        "--source-cache", type=Path, help="embedding cache of the source model (facebridge embed)"
    )
    fit.add_argument("--target-cache", type=Path, help="embedding cache of the target model, same images")
    fit.add_argument(
        "--from-heads",
        nargs=2,
        metavar=("HEAD_A", "HEAD_B"),
        help="closed-form map from two classifiers' final layers sharing the same classes: each a "
        "model.onnx[#node], a weights.npz (weight, bias) or weight.npy[,bias.npy]; no data needed",
    )
    fit.add_argument("--source-npy", type=Path)
    fit.add_argument("--target-npy", type=Path)
    fit.add_argument("--labels", type=Path, help=".npy identity label per row (enables verification metrics)")
    fit.add_argument("--source-model")
    fit.add_argument("--target-model")
    fit.add_argument("--source-sha256")
    fit.add_argument("--target-sha256")
    fit.add_argument(
        "--method", default="ridge", choices=["lstsq", "affine", "ridge", "procrustes", "softmax"]
    )
    fit.add_argument("--alpha", type=float, help="fixed ridge alpha instead of cross-validation")
    fit.add_argument("--heldout", type=float, default=0.25, help="fraction of identities held out")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--dataset", default="custom", help="name recorded in the map's provenance")
    fit.add_argument("--out", type=Path, default=Path("mappings"))
    fit.add_argument("--models-dir", type=Path)
    fit.set_defaults(func=cmd_fit)

    calibrate = sub.add_parser(
        "calibrate", help="same-space thresholds for one model from an embedding cache"
    )
    calibrate.add_argument("--cache", type=Path, required=True)
    calibrate.add_argument("--dataset", default="custom")
    calibrate.add_argument("--max-images", type=int, default=8000)
    calibrate.add_argument("--out", type=Path, default=Path("mappings/spaces"))
    calibrate.set_defaults(func=cmd_calibrate)
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
