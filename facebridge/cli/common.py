"""What the commands share: settings from the command line over FACEBRIDGE_* variables, model loading.

Nothing here imports the vision stack at module level, so `facebridge --help` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facebridge.config import Settings
    from facebridge.vision.manifest import ModelEntry
    from facebridge.vision.pipeline import FacePipeline

# onnxruntime is in the [cpu] and [gpu] extras only (two wheels of one package): a bare
# `pip install facebridge` has none, and every command that runs a model says so in one line
RUNTIME_FIX = 'pip install "facebridge[cpu]" (or "facebridge[gpu]" for CUDA)'
NO_RUNTIME_EXIT = 2


def onnxruntime_installed() -> bool:
    """Whether an ONNX Runtime is installed, found without importing it."""
    return importlib.util.find_spec("onnxruntime") is not None


def _is_missing_runtime(error: ImportError) -> bool:
    return isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == "onnxruntime"


def _no_runtime(command: str | None) -> SystemExit:
    who = f"facebridge {command} runs models and" if command else "running models"
    print(f"error: {who} needs an ONNX Runtime, which is not installed: {RUNTIME_FIX}", file=sys.stderr)
    return SystemExit(NO_RUNTIME_EXIT)


def _command_name(args: argparse.Namespace) -> str | None:
    """`embed`, `models add`, `cohort build`: the words naming the command args were parsed for."""
    words = [getattr(args, "command", None)]
    words += [value for name, value in sorted(vars(args).items()) if name.endswith("_command")]
    return " ".join(w for w in words if isinstance(w, str)) or None


def require_onnxruntime(command: str | None = None) -> None:
    """Exit 2 with the one line saying what to install when no ONNX Runtime is installed."""
    if not onnxruntime_installed():
        raise _no_runtime(command)


def needs_onnxruntime(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A command that runs models: without an ONNX Runtime it says what to install and exits 2 before
    importing anything, and an onnxruntime import that fails later for want of it says the same."""

    @functools.wraps(command)
    def guarded(args: argparse.Namespace) -> int:
        require_onnxruntime(_command_name(args))
        try:
            return command(args)
        except ImportError as error:
            if _is_missing_runtime(error):
                raise _no_runtime(_command_name(args)) from None
            raise

    return guarded


@dataclass(frozen=True)
class FileCheck:
    state: str  # "available", "unavailable" or "refused", as ModelStatus.state
    reason: str = ""


def verify_model_file(entry: ModelEntry, models_dir: Path) -> FileCheck:
    """A model file's presence and pinned hash, checked with or without an ONNX Runtime installed
    (the registry's verify_file when one is; its import needs onnxruntime)."""
    if onnxruntime_installed():
        try:
            from facebridge.vision.registry import verify_file
        except ImportError:  # a broken runtime: `facebridge doctor` says so, the files are still checked
            pass
        else:
            status = verify_file(entry, models_dir)
            return FileCheck(status.state, status.reason)
    from facebridge.vision.manifest import sha256_file

    path = models_dir / entry.file
    if not path.is_file():
        return FileCheck("unavailable", f"file {entry.file} not found in {models_dir}")
    digest = sha256_file(path)
    if entry.sha256 is not None and digest != entry.sha256:
        return FileCheck("refused", f"sha256 of {entry.file} is {digest}, the manifest pins {entry.sha256}")
    return FileCheck("available")


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
    require_onnxruntime()
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
