"""Photo to embeddings: detect, pick faces, align to each recognizer's template, embed in one batch."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from app.vision.alignment import align_face
from app.vision.batching import MicroBatcher
from app.vision.detection import Detection, select_faces
from app.vision.recognizer import Recognizer
from app.vision.registry import ModelRegistry


class NoFaceFound(ValueError):
    """The detector found no face above the score threshold."""


@dataclass
class FaceEmbedding:
    model_id: str
    sha256: str
    vector: np.ndarray
    normalized: bool


@dataclass
class FaceResult:
    """One face: where it is (None for a pre-aligned crop) and its embedding under each model."""

    detection: Detection | None
    embeddings: list[FaceEmbedding] = field(default_factory=list)


@dataclass(frozen=True)
class DetectionOptions:
    detector: str = "yunet"
    score_threshold: float = 0.6
    max_faces: int = 1
    policy: str = "largest"


class FacePipeline:
    """Stateless glue over a ModelRegistry: safe to share between request threads."""

    def __init__(self, registry: ModelRegistry, micro_batch_ms: float = 0.0, micro_batch_max: int = 32):
        self.registry = registry
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

    def detect(self, image_bgr: np.ndarray, options: DetectionOptions) -> list[Detection]:
        detector = self.registry.detector(options.detector)
        faces = detector.detect(image_bgr, options.score_threshold)
        return select_faces(faces, image_bgr.shape, options.policy, options.max_faces)

    def embed_faces(
        self, image_bgr: np.ndarray, faces: list[Detection], model_ids: list[str], normalize: bool = True
    ) -> list[FaceResult]:
        """Align every face to each model's template and embed all faces of a model in one batch."""
        results = [FaceResult(face) for face in faces]
        for model_id in model_ids:
            recognizer = self.registry.recognizer(model_id)
            template = self.registry.manifest.templates[recognizer.entry.alignment or ""]
            crops = [align_face(image_bgr, face.landmarks, template) for face in faces]
            vectors = self._embed(recognizer, crops, normalize)
            for result, vector in zip(results, vectors, strict=True):
                result.embeddings.append(FaceEmbedding(model_id, recognizer.sha256, vector, normalize))
        return results

    def embed_aligned(self, crop_bgr: np.ndarray, model_ids: list[str], normalize: bool = True) -> FaceResult:
        """Embed a crop that is already aligned; it is resized to each model's input size if needed."""
        result = FaceResult(None)
        for model_id in model_ids:
            recognizer = self.registry.recognizer(model_id)
            crop = crop_bgr
            if crop.shape[:2] != (recognizer.size, recognizer.size):
                crop = cv2.resize(crop, (recognizer.size, recognizer.size), interpolation=cv2.INTER_AREA)
            vector = self._embed(recognizer, [crop], normalize)[0]
            result.embeddings.append(FaceEmbedding(model_id, recognizer.sha256, vector, normalize))
        return result

    def embed_image(
        self, image_bgr: np.ndarray, model_ids: list[str], options: DetectionOptions, normalize: bool = True
    ) -> list[FaceResult]:
        faces = self.detect(image_bgr, options)
        if not faces:
            raise NoFaceFound(f"no face found with {options.detector} at score >= {options.score_threshold}")
        return self.embed_faces(image_bgr, faces, model_ids, normalize)
