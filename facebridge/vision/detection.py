"""Face detectors that give a box, five landmarks and a score per face.

Both engines return faces in the same form so the rest of the pipeline does not care which one ran.
Detector objects keep per-call state (OpenCV's input size, insightface's anchor cache), hence the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from facebridge.vision.manifest import ModelEntry


@dataclass(frozen=True)
class Detection:
    """One face: box (x1, y1, x2, y2), landmarks (5, 2) in image pixels, detector confidence."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


class FaceDetector(Protocol):
    model_id: str

    def detect(self, image_bgr: np.ndarray, score_threshold: float) -> list[Detection]: ...


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink large photos before detection (faces stay findable, cost stays bounded)."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, scale


class YuNetDetector:
    """OpenCV's FaceDetectorYN over the YuNet ONNX file."""

    def __init__(self, entry: ModelEntry, path: Path, max_side: int = 1280, nms_threshold: float = 0.3):
        self.model_id = entry.id
        self.max_side = max_side
        self._detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.5, nms_threshold, 5000)
        self._lock = threading.Lock()

    def detect(self, image_bgr: np.ndarray, score_threshold: float) -> list[Detection]:
        small, scale = _downscale(image_bgr, self.max_side)
        with self._lock:
            self._detector.setInputSize((small.shape[1], small.shape[0]))
            self._detector.setScoreThreshold(score_threshold)
            _, rows = self._detector.detect(small)
        if rows is None:
            return []
        faces = []
        for row in np.asarray(rows, dtype=np.float64) / np.r_[np.full(14, scale), 1.0]:
            x, y, w, h = row[:4]
            faces.append(Detection(np.array([x, y, x + w, y + h]), row[4:14].reshape(5, 2), float(row[14])))
        return faces


class ScrfdDetector:
    """insightface's SCRFD through its model_zoo (640x640 letterboxed input)."""

    def __init__(self, entry: ModelEntry, path: Path, providers: list[str], input_size: int = 640):
        from insightface.model_zoo import get_model

        self.model_id = entry.id
        self._model = get_model(str(path), providers=providers)
        self._model.prepare(ctx_id=0 if providers[0].startswith("CUDA") else -1, input_size=(input_size,) * 2)
        self._lock = threading.Lock()

    def detect(self, image_bgr: np.ndarray, score_threshold: float) -> list[Detection]:
        with self._lock:
            boxes, keypoints = self._model.detect(image_bgr, det_thresh=score_threshold)
        if keypoints is None:
            return []
        return [
            Detection(np.asarray(b[:4], dtype=np.float64), np.asarray(k, dtype=np.float64), float(b[4]))
            for b, k in zip(boxes, keypoints, strict=True)
        ]


def select_faces(
    faces: list[Detection], image_shape: tuple[int, ...], policy: str, limit: int
) -> list[Detection]:
    """Order faces by `policy` and keep at most `limit`.

    "largest" puts the biggest face first; "center" favours large faces near the image centre, which
    picks the subject of a portrait-style photo such as LFW's.
    """
    if policy == "center":
        cy, cx = image_shape[0] / 2, image_shape[1] / 2

        def key(face: Detection) -> float:
            fx, fy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
            return face.area - 2.0 * ((fx - cx) ** 2 + (fy - cy) ** 2)

    else:

        def key(face: Detection) -> float:
            return face.area

    return sorted(faces, key=key, reverse=True)[:limit]
