"""What the commands share: settings from the command line over FACEBRIDGE_* variables, model loading.

Nothing here imports the vision stack at module level, so `facebridge --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facebridge.config import Settings
    from facebridge.vision.pipeline import FacePipeline


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """--models-dir / --mappings-dir / --cache-dir / --providers: unset means the Settings value
    (a FACEBRIDGE_* variable, or the default shown by `facebridge doctor`)."""
    group = parser.add_argument_group("settings (default: FACEBRIDGE_* variables, then built-in defaults)")
    group.add_argument("--models-dir", type=Path, help="model files (FACEBRIDGE_MODELS_DIR)")
    group.add_argument("--mappings-dir", type=Path, help="mapping bank (FACEBRIDGE_MAPPINGS_DIR)")
    group.add_argument("--cache-dir", type=Path, help="embedding caches (FACEBRIDGE_CACHE_DIR)")
    group.add_argument(
        "--providers", choices=["auto", "cpu", "cuda"], help="onnxruntime providers (FACEBRIDGE_PROVIDERS)"
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings with the command line's values over the environment's."""
    from facebridge.config import Settings

    overrides: dict[str, Any] = {}
    for name in ("models_dir", "mappings_dir", "cache_dir", "providers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def open_pipeline(settings: Settings, model_ids: list[str], detector: str) -> FacePipeline:
    from facebridge.vision.loading import open_registry
    from facebridge.vision.pipeline import FacePipeline

    registry = open_registry(settings, model_ids=[*model_ids, detector])
    for model_id in model_ids:
        registry.recognizer(model_id)  # raises with the reason if it is not loaded
    registry.detector(detector)
    return FacePipeline(registry)


def lfw_caches(args: argparse.Namespace, model_ids: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """Embedding caches of every LFW pair photo per model: reused when present, built otherwise."""
    from facebridge.embedding_cache import EmbeddingCache, build_cache
    from facebridge.evaluation.lfw import pair_images, read_pairs
    from facebridge.evaluation.native import default_cache_path

    settings = settings_from(args)
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
        pipeline = open_pipeline(settings, missing, args.detector)
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        for model_id in missing:
            out = default_cache_path(settings.cache_dir, model_id)
            caches[model_id] = build_cache(pipeline, args.lfw, model_id, out, args.detector, only=images)
    return caches, pairs


def space_for(settings: Settings, model: str, sha256: str | None, dim: int) -> Any:
    """A SpaceRef for .npy input: the hash comes from --*-sha256 or the manifest's pin."""
    from facebridge.mapping.mapfile import SpaceRef

    entry = settings.load_manifest().get(model)
    digest = sha256 or (entry.sha256 if entry is not None else None)
    if digest is None:
        raise SystemExit(
            f"error: no sha256 known for {model}: pass it with --source-sha256 / --target-sha256"
        )
    return SpaceRef(model=model, dim=dim, sha256=digest)


def check_methods(methods: list[str] | None) -> None:
    """--method names checked after parsing (the list lives with the estimators, not loaded for --help)."""
    from facebridge.mapping.methods import METHODS

    unknown = [m for m in methods or [] if m not in METHODS]
    if unknown:
        raise SystemExit(f"error: unknown --method {', '.join(unknown)}; choose from {', '.join(METHODS)}")
