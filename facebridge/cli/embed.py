"""`facebridge embed` and `embed-dataset`: photo folders into resumable embedding caches."""

from __future__ import annotations

import argparse
from pathlib import Path

from facebridge.cli.common import add_settings_options, needs_onnxruntime, open_pipeline, settings_from


@needs_onnxruntime
def cmd_embed(args: argparse.Namespace) -> int:
    from facebridge.embedding_cache import build_cache
    from facebridge.evaluation.lfw import pair_images, read_pairs

    settings = settings_from(args)
    pipeline = open_pipeline(settings, [args.model], args.detector)
    out = args.out or settings.cache_dir / f"{args.dataset.name}-{args.model}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    only = pair_images(read_pairs(args.pairs)) if args.pairs else None
    cache = build_cache(pipeline, args.dataset, args.model, out, args.detector, only=only)
    print(f"{out}: {len(cache)} images, {int((~cache.detected).sum())} without a detected face")
    return 0


@needs_onnxruntime
def cmd_embed_dataset(args: argparse.Namespace) -> int:
    from facebridge.dataset_embedding import CLEAN, embed_dataset

    settings = settings_from(args)
    pipeline = open_pipeline(settings, args.model, args.detector)
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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    embed = sub.add_parser("embed", help="embed a dataset folder (one sub-folder per identity) into a cache")
    embed.add_argument("dataset", type=Path, help="a folder of photos, one sub-folder per identity")
    embed.add_argument(
        "--model", required=True, help="the recognizer to embed with (see facebridge models list)"
    )
    embed.add_argument(
        "--out", type=Path, help="the cache file to write (default: CACHE_DIR/DATASET-MODEL.npz)"
    )
    embed.add_argument("--detector", default="yunet", help="face detector (default yunet)")
    embed.add_argument("--pairs", type=Path, help="embed only the images this pairs file uses")
    add_settings_options(embed)
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
    many.add_argument("--seed", type=int, default=0, help="the draw of augmentations and of --subset")
    many.add_argument("--subset", type=int, help="only this many photos (seeded draw, same for every kind)")
    many.add_argument("--detector", default="yunet", help="face detector (default yunet)")
    add_settings_options(many)
    many.set_defaults(func=cmd_embed_dataset)
