"""Build a ModelRegistry from settings: the one place that turns configuration into loaded models."""

from __future__ import annotations

import logging

from facebridge.config import Settings
from facebridge.vision.registry import ModelRegistry
from facebridge.vision.runtime import choose_providers

log = logging.getLogger(__name__)


def open_registry(settings: Settings, load: bool = True, model_ids: list[str] | None = None) -> ModelRegistry:
    manifest = settings.load_manifest()
    providers = choose_providers(settings.providers)
    log.info("onnxruntime providers requested: %s", providers)
    registry = ModelRegistry(
        manifest, settings.models_dir, providers, settings.intra_op_threads, settings.ort_spinning
    )
    if load:
        registry.load(model_ids if model_ids is not None else settings.load_models)
    return registry
