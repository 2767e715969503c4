"""CLI commands for the seed papers' other methods: polytope hub, full-network embedding, classifier heads.

Kept apart from `facebridge.cli` (serving, fitting and migration) because these are studies: each measures a
method on the real models and LFW and writes its own table into the evaluation report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from facebridge.cli.common import add_settings_options, needs_onnxruntime

REPORT = Path("docs/interchangeability.md")


def _command_line() -> str:
    return "facebridge " + " ".join(sys.argv[1:])


@needs_onnxruntime
def cmd_evaluate_hub(args: argparse.Namespace) -> int:
    from facebridge.cli.common import lfw_caches
    from facebridge.evaluation.hub import hub_markdown, study_hub
    from facebridge.evaluation.interchange import native_scores, paired_lfw, summarise
    from facebridge.evaluation.sections import upsert_section

    pairs_spec = [tuple(spec.split(":", 1)) for spec in args.pair]
    if any(len(p) != 2 or args.via in p for p in pairs_spec):
        raise SystemExit("--pair takes A:B, two models other than the --via model")
    models = list(dict.fromkeys([m for p in pairs_spec for m in p] + [args.via]))
    caches, pairs = lfw_caches(args, models)
    studies, natives = [], {}
    for source, target in pairs_spec:
        data = paired_lfw(caches[source], caches[target], pairs)
        via = paired_lfw(caches[source], caches[args.via], pairs)
        for model, x in ((source, data.a), (target, data.b)):
            natives[model] = summarise(native_scores(x, data), data.labels, data.folds)
        studies.append(study_hub(data, via, tuple(args.polytope or ("simplex", "orthoplex", "cube"))))
    markdown = hub_markdown(studies, natives, _command_line())
    print(markdown)
    if args.report is not None:
        upsert_section(args.report, "polytope-hub", markdown)
        print(f"wrote the polytope-hub section of {args.report}")
    return 0


@needs_onnxruntime
def cmd_evaluate_full_network(args: argparse.Namespace) -> int:
    from facebridge.cli.common import lfw_caches, open_pipeline, settings_from
    from facebridge.dataset_embedding import dataset_landmarks
    from facebridge.evaluation.full_network import (
        full_network_markdown,
        lfw_layer_features,
        paired_paths,
        study_full_network,
    )
    from facebridge.evaluation.interchange import paired_lfw
    from facebridge.evaluation.sections import upsert_section

    pairs_spec = [tuple(spec.split(":", 1)) for spec in args.pair]
    models = list(dict.fromkeys(m for p in pairs_spec for m in p))
    caches, pairs = lfw_caches(args, models)
    settings = settings_from(args)
    pipeline = open_pipeline(settings, sorted({a for a, _ in pairs_spec}), args.detector)
    studies = []
    for source, target in pairs_spec:
        paths = paired_paths(caches[source], caches[target])
        landmarks = dataset_landmarks(
            pipeline,
            args.lfw,
            paths,
            settings.cache_dir / f"lfw-landmarks-{args.detector}.npz",
            args.detector,
        )
        embeddings, features, _ = lfw_layer_features(
            pipeline, args.lfw, paths, landmarks, source, settings.cache_dir / f"lfw-layers-{source}.npz"
        )
        data = paired_lfw(caches[source], caches[target], pairs)
        studies.append(study_full_network(data, features, embeddings))
    markdown = full_network_markdown(studies, _command_line())
    print(markdown)
    if args.report is not None:
        upsert_section(args.report, "full-network", markdown)
        print(f"wrote the full-network section of {args.report}")
    return 0


def fit_from_heads(args: argparse.Namespace, settings: Any) -> int:
    """`facebridge fit --from-heads HEAD_A HEAD_B`: a data-free map, measured when features are given."""
    import datetime as dt

    import numpy as np

    from facebridge import __version__
    from facebridge.cli.common import space_for
    from facebridge.mapping.estimators import row_cosine
    from facebridge.mapping.fitting import r2_score
    from facebridge.mapping.heads import HeadMap, load_head
    from facebridge.mapping.mapfile import (
        FitProvenance,
        MapMetadata,
        MapQuality,
        SpaceRef,
        map_filename,
        save_map,
    )
    from facebridge.vision.manifest import sha256_file

    head_a, head_b = (load_head(spec) for spec in args.from_heads)
    estimator = HeadMap().fit_heads(head_a, head_b)

    def space(spec: str, model: str | None, digest: str | None, dim: int) -> SpaceRef:
        path = Path(spec.partition("#")[0].partition(",")[0])
        name = model or path.stem
        if digest is None and path.suffix == ".onnx":
            digest = sha256_file(path)  # the classifier itself pins the space
        return space_for(settings, name, digest, dim)

    source = space(args.from_heads[0], args.source_model, args.source_sha256, head_a.weight.shape[0])
    target = space(args.from_heads[1], args.target_model, args.target_sha256, head_b.weight.shape[0])
    quality = MapQuality(mean_cosine=None, r2=None)
    checked = 0
    if args.source_npy and args.target_npy:  # nothing was fitted on them, so every row is held out
        x, y = np.load(args.source_npy), np.load(args.target_npy)
        predicted = estimator.transform(x)
        quality = MapQuality(mean_cosine=float(row_cosine(predicted, y).mean()), r2=r2_score(predicted, y))
        checked = len(x)
    meta = MapMetadata(
        source=source,
        target=target,
        method=HeadMap.method,
        params=estimator.get_params(),
        fitted={"n_classes_": estimator.n_classes_, "heads": [head_a.source, head_b.source]},
        provenance=FitProvenance(
            dataset="none: closed form from the classifier heads"
            + (f"; checked on {args.dataset}" if checked else ""),
            images=0,
            identities=head_a.classes,
            heldout_images=checked,
            heldout_identities=0,
            pairing="shared classes of the two heads",
            seed=0,
        ),
        quality=quality,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        code_version=__version__,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / map_filename(source.model, target.model)
    saved = save_map(path, meta, estimator.coef_, estimator.intercept_)
    print(f"{path}: {saved.id} method heads ({head_a.classes} shared classes, no data)")
    if checked:
        print(f"  checked on {checked} rows: mean cosine {quality.mean_cosine:.4f}, R2 {quality.r2:.4f}")
    return 0


@needs_onnxruntime
def cmd_fit_full_network(args: argparse.Namespace) -> int:
    """Statistics for the full-network embedding mode of one recognizer, from a folder of photos."""
    from facebridge.cli.common import open_pipeline, settings_from
    from facebridge.dataset_embedding import dataset_landmarks
    from facebridge.embedding_cache import list_images
    from facebridge.evaluation.full_network import lfw_layer_features
    from facebridge.evaluation.lfw import pair_images, read_pairs
    from facebridge.vision.full_network import FullNetworkEmbedding, stats_path

    settings = settings_from(args)
    pipeline = open_pipeline(settings, [args.model], args.detector)
    paths = pair_images(read_pairs(args.pairs)) if args.pairs else list_images(args.dataset)
    # with --pairs on LFW the files are the ones `evaluate-full-network` caches, so nothing is recomputed
    tag = args.dataset.name if args.pairs else f"{args.dataset.name}-all"
    landmarks = dataset_landmarks(
        pipeline,
        args.dataset,
        paths,
        settings.cache_dir / f"{tag}-landmarks-{args.detector}.npz",
        args.detector,
    )
    _, features, channels = lfw_layer_features(
        pipeline,
        args.dataset,
        paths,
        landmarks,
        args.model,
        settings.cache_dir / f"{tag}-layers-{args.model}.npz",
    )
    fne = FullNetworkEmbedding().fit(features)
    out = stats_path(args.out, args.model)
    out.parent.mkdir(parents=True, exist_ok=True)
    layers = [{"index": i, "channels": c} for i, c in enumerate(channels)]
    fne.save(out, args.model, pipeline.registry.recognizer(args.model).sha256, layers)
    print(f"{out}: {features.shape[1]} features from {len(layers)} layers, fitted on {len(features)} photos")
    return 0


def _lfw_study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lfw", type=Path, required=True, help="LFW root holding pairs.txt")
    parser.add_argument("--report", type=Path, default=REPORT, help="report to write the table into")
    parser.add_argument("--detector", default="yunet")
    add_settings_options(parser)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    hub = sub.add_parser(
        "evaluate-hub",
        help="LFW cross accuracy through a polytope hub vs direct maps and a model space as hub",
    )
    _lfw_study_options(hub)
    hub.add_argument("--pair", action="append", required=True, metavar="A:B", help="repeat for several")
    hub.add_argument("--via", required=True, help="the third model whose space is the model-space hub")
    hub.add_argument("--polytope", action="append", choices=["simplex", "orthoplex", "cube"])
    hub.set_defaults(func=cmd_evaluate_hub)

    fne = sub.add_parser(
        "evaluate-full-network",
        help="LFW verification with full-network embeddings, and maps from them into another space",
    )
    _lfw_study_options(fne)
    fne.add_argument("--pair", action="append", required=True, metavar="A:B", help="A's layers, B's space")
    fne.set_defaults(func=cmd_evaluate_full_network)

    stats = sub.add_parser(
        "fit-full-network",
        help="fit a recognizer's full-network statistics (for /embed mode full-network) on a photo folder",
    )
    stats.add_argument("--model", required=True)
    stats.add_argument("--dataset", type=Path, required=True, help="folder with one sub-folder per person")
    stats.add_argument("--pairs", type=Path, help="only the photos a pairs.txt uses (LFW)")
    stats.add_argument("--out", type=Path, default=Path("mappings"), help="mappings folder of the service")
    stats.add_argument("--detector", default="yunet")
    add_settings_options(stats)
    stats.set_defaults(func=cmd_fit_full_network)
