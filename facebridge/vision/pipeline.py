"""Photo to embeddings: detect, pick faces, align to each recognizer's template, embed in one batch."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facebridge.exceptions import FullNetworkUnavailable, NoFaceFound
from facebridge.vision.alignment import align_face
from facebridge.vision.batching import MicroBatcher
from facebridge.vision.detection import Detection, select_faces
from facebridge.vision.full_network import FullNetworkModel, stats_path
from facebridge.vision.recognizer import Recognizer
from facebridge.vision.registry import ModelRegistry

EMBEDDING, FULL_NETWORK = "embedding", "full-network"


@dataclass
class FaceEmbedding:
    model_id: str
    sha256: str
    vector: np.ndarray
    normalized: bool
    mode: str = EMBEDDING


@dataclass
class FaceResult:
    """One face: where it is (None for a pre-aligned crop) and its embedding under each model."""

    detection: Detection | None
    embeddings: list[FaceEmbedding] = field(default_factory=list)
    crops: dict[str, np.ndarray] = field(default_factory=dict)  # BGR crop per model, when asked for


@dataclass(frozen=True)
class DetectionOptions:
    detector: str = "yunet"
    score_threshold: float = 0.6
    max_faces: int = 1
    policy: str = "largest"


class FacePipeline:
    """Stateless glue over a ModelRegistry: safe to share between request threads."""

    def __init__(
        self,
        registry: ModelRegistry,
        micro_batch_ms: float = 0.0,
        micro_batch_max: int = 32,
        full_network_dir: Path | None = None,
    ):
        self.registry = registry
        # full-network embedding mode: statistics under full_network_dir, extractors built on first use
        self.full_network_dir = full_network_dir
        self._full_network: dict[str, FullNetworkModel] = {}
        # per model, created on first use; 0 ms turns micro-batching off (each request runs alone)
        self.micro_batch_ms = micro_batch_ms
        self.micro_batch_max = micro_batch_max
        self._batchers: dict[str, MicroBatcher] = {}
        self._batchers_lock = threading.Lock()

    def _embed(self, recognizer: Recognizer, crops: list[np.ndarray], normalize: bool) -> np.ndarray:
        if self.micro_batch_ms <= 0:
            return recognizer.embed(crops, normalize=normalize)
        with self._batchers_lock:
            batcher = self._batchers.get(recognizer.entry.id)
            if batcher is None or batcher.recognizer is not recognizer:
                batcher = MicroBatcher(recognizer, self.micro_batch_max, self.micro_batch_ms)
                self._batchers[recognizer.entry.id] = batcher
        return batcher.embed(crops, normalize=normalize)

    def full_network(self, model_id: str) -> FullNetworkModel:
        """The model's full-network mode; FullNetworkUnavailable when it has no valid statistics."""
        recognizer = self.registry.recognizer(model_id)
        with self._batchers_lock:
            loaded = self._full_network.get(model_id)
            if loaded is not None:
                return loaded
            path = stats_path(self.full_network_dir, model_id) if self.full_network_dir else None
            if path is None or not path.exists():
                raise FullNetworkUnavailable(
                    f"{model_id} has no full-network statistics (facebridge fit-full-network)"
                )
            try:
                loaded = FullNetworkModel(
                    self.registry.model_path(model_id), path, recognizer.sha256, self.registry.providers
                )
            except (ValueError, OSError, KeyError) as exc:
                raise FullNetworkUnavailable(f"{path.name} refused: {exc}") from exc
            self._full_network[model_id] = loaded
            return loaded

    def detect(self, image_bgr: np.ndarray, options: DetectionOptions) -> list[Detection]:
        detector = self.registry.detector(options.detector)
        faces = detector.detect(image_bgr, options.score_threshold)
        return select_faces(faces, image_bgr.shape, options.policy, options.max_faces)

    def _vectors(
        self, recognizer: Recognizer, crops: list[np.ndarray], normalize: bool, mode: str
    ) -> np.ndarray:
        if mode == FULL_NETWORK:
            return (
                self.full_network(recognizer.entry.id).codes(recognizer.preprocess(crops)).astype(np.float32)
            )
        return self._embed(recognizer, crops, normalize)

    def embed_faces(
        self,
        image_bgr: np.ndarray,
        faces: list[Detection],
        model_ids: list[str],
        normalize: bool = True,
        mode: str = EMBEDDING,
        keep_crops: bool = False,
    ) -> list[FaceResult]:
        """Align every face to each model's template and embed all faces of a model in one batch
        (`keep_crops`: each result also holds the aligned crop of each model)."""
        results = [FaceResult(face) for face in faces]
        for model_id in model_ids:
            recognizer = self.registry.recognizer(model_id)
            template = self.registry.manifest.templates[recognizer.entry.alignment or ""]
            crops = [align_face(image_bgr, face.landmarks, template) for face in faces]
            vectors = self._vectors(recognizer, crops, normalize, mode)
            for result, vector, crop in zip(results, vectors, crops, strict=True):
                result.embeddings.append(
                    FaceEmbedding(model_id, recognizer.sha256, vector, normalize and mode == EMBEDDING, mode)
                )
                if keep_crops:
                    result.crops[model_id] = crop
        return results

    def embed_aligned(
        self,
        crop_bgr: np.ndarray,
        model_ids: list[str],
        normalize: bool = True,
        mode: str = EMBEDDING,
        keep_crops: bool = False,
    ) -> FaceResult:
        """Embed a crop that is already aligned; it is resized to each model's input size if needed."""
        result = FaceResult(None)
        for model_id in model_ids:
            recognizer = self.registry.recognizer(model_id)
            crop = crop_bgr
            if crop.shape[:2] != (recognizer.size, recognizer.size):
                crop = cv2.resize(crop, (recognizer.size, recognizer.size), interpolation=cv2.INTER_AREA)
            vector = self._vectors(recognizer, [crop], normalize, mode)[0]
            result.embeddings.append(
                FaceEmbedding(model_id, recognizer.sha256, vector, normalize and mode == EMBEDDING, mode)
            )
            if keep_crops:
                result.crops[model_id] = crop
        return result

    def embed_image(
        self,
        image_bgr: np.ndarray,
        model_ids: list[str],
        options: DetectionOptions,
        normalize: bool = True,
        mode: str = EMBEDDING,
        keep_crops: bool = False,
    ) -> list[FaceResult]:
        faces = self.detect(image_bgr, options)
        if not faces:
            raise NoFaceFound(f"no face found with {options.detector} at score >= {options.score_threshold}")
        return self.embed_faces(image_bgr, faces, model_ids, normalize, mode, keep_crops)
