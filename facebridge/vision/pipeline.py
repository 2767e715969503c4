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
RUN_FACES = 32  # faces embedded together in one run: bounds the batch tensor (32 x 3 x 224 x 224 floats)


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
        return self.embed_faces_many([(image_bgr, faces)], model_ids, normalize, mode, keep_crops)[0]

    def embed_faces_many(
        self,
        images: list[tuple[np.ndarray, list[Detection]]],
        model_ids: list[str],
        normalize: bool = True,
        mode: str = EMBEDDING,
        keep_crops: bool = False,
    ) -> list[list[FaceResult]]:
        """`embed_faces` for several photos at once: the faces of all of them go through each model
        together, up to RUN_FACES per run, instead of one run per photo."""
        results = [[FaceResult(face) for face in faces] for _, faces in images]
        jobs = [
            (image, face.landmarks, result)
            for (image, faces), rows in zip(images, results, strict=True)
            for face, result in zip(faces, rows, strict=True)
        ]
        for model_id in model_ids:
            recognizer = self.registry.recognizer(model_id)
            template = self.registry.manifest.templates[recognizer.entry.alignment or ""]
            for start in range(0, len(jobs), RUN_FACES):
                chunk = jobs[start : start + RUN_FACES]
                crops = [align_face(image, landmarks, template) for image, landmarks, _ in chunk]
                vectors = self._vectors(recognizer, crops, normalize, mode)
                rows = [result for _, _, result in chunk]
                self._collect(recognizer, rows, vectors, crops, normalize, mode, keep_crops)
        return results

    @staticmethod
    def _collect(
        recognizer: Recognizer,
        results: list[FaceResult],
        vectors: np.ndarray,
        crops: list[np.ndarray],
        normalize: bool,
        mode: str,
        keep_crops: bool,
    ) -> None:
        model_id = recognizer.entry.id
        for result, vector, crop in zip(results, vectors, crops, strict=True):
            result.embeddings.append(
                FaceEmbedding(model_id, recognizer.sha256, vector, normalize and mode == EMBEDDING, mode)
            )
            if keep_crops:
                result.crops[model_id] = crop

    def embed_aligned(
        self,
        crop_bgr: np.ndarray,
        model_ids: list[str],
        normalize: bool = True,
        mode: str = EMBEDDING,
        keep_crops: bool = False,
    ) -> FaceResult:
        """Embed a crop that is already aligned; it is resized to each model's input size if needed."""
        return self.embed_aligned_many([crop_bgr], model_ids, normalize, mode, keep_crops)[0]

    def embed_aligned_many(
        self,
        crops_bgr: list[np.ndarray],
        model_ids: list[str],
        normalize: bool = True,
        mode: str = EMBEDDING,
        keep_crops: bool = False,
    ) -> list[FaceResult]:
        """`embed_aligned` for several crops: each model embeds them together, up to RUN_FACES a run."""
        results = [FaceResult(None) for _ in crops_bgr]
        for model_id in model_ids:
            recognizer = self.registry.recognizer(model_id)
            size = (recognizer.size, recognizer.size)
            for start in range(0, len(crops_bgr), RUN_FACES):
                crops = [
                    crop if crop.shape[:2] == size else cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
                    for crop in crops_bgr[start : start + RUN_FACES]
                ]
                vectors = self._vectors(recognizer, crops, normalize, mode)
                rows = results[start : start + RUN_FACES]
                self._collect(recognizer, rows, vectors, crops, normalize, mode, keep_crops)
        return results

    def embed_image(
        self,
        image_bgr: np.ndarray,
        model_ids: list[str],
        options: DetectionOptions,
        normalize: bool = True,
        mode: str = EMBEDDING,
        keep_crops: bool = False,
    ) -> list[FaceResult]:
        faces = self.detect_faces(image_bgr, options)
        return self.embed_faces(image_bgr, faces, model_ids, normalize, mode, keep_crops)

    def detect_faces(self, image_bgr: np.ndarray, options: DetectionOptions) -> list[Detection]:
        """`detect`, with NoFaceFound when it finds none."""
        faces = self.detect(image_bgr, options)
        if not faces:
            raise NoFaceFound(f"no face found with {options.detector} at score >= {options.score_threshold}")
        return faces
