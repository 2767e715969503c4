"""Face detectors that give a box, five landmarks and a score per face.

Both engines return faces in the same form so the rest of the pipeline does not care which one ran.
Each detector serialises its inference with a lock (OpenCV's detector keeps per-call input-size state).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import onnxruntime as ort

from facebridge.vision.manifest import ModelEntry
from facebridge.vision.runtime import CPU, session_options

log = logging.getLogger(__name__)


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


def _scrfd_layout(output_count: int) -> tuple[tuple[int, ...], int]:
    """Strides and anchors per location, read from the output count (scores, boxes, keypoints per stride)."""
    if output_count == 9:
        return (8, 16, 32), 2
    if output_count == 15:
        return (8, 16, 32, 64, 128), 1
    raise ValueError(f"SCRFD with keypoints has 9 or 15 outputs; this file has {output_count}")


def _spatial_dims(path: Path) -> list[int | str | None]:
    """The model input's (height, width) as declared: an int when fixed, a name or None when free."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return list(ort.InferenceSession(str(path), options, providers=[CPU]).get_inputs()[0].shape[2:4])


def _scrfd_session(
    path: Path, providers: list[str], input_size: int
) -> tuple[ort.InferenceSession, int, int]:
    """Open the session with its spatial input fixed: (session, width, height).

    A fixed input shape lets onnxruntime pick the kernels of insightface's static-shape session, so scores
    match it bit for bit. A file whose input size is fixed keeps that size, as in insightface.
    """
    options = session_options()
    dims = _spatial_dims(path)
    for dim in dims:
        if isinstance(dim, str):
            options.add_free_dimension_override_by_name(dim, input_size)
    height, width = (dim if isinstance(dim, int) else input_size for dim in dims)
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    used = session.get_providers()
    if providers[0] not in used:
        log.warning("%s: asked for %s, onnxruntime gave %s", path.name, providers, used)
    else:
        log.info("%s: providers %s", path.name, used)
    return session, width, height


def _letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio into the top-left corner of a black canvas; returns the scale."""
    ratio = image.shape[0] / image.shape[1]
    if ratio > height / width:
        new_height, new_width = height, max(1, int(height / ratio))
    else:
        new_height, new_width = max(1, int(width * ratio)), width
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(image, (new_width, new_height))
    return canvas, new_height / image.shape[0]


def _scrfd_blob(canvas_bgr: np.ndarray) -> np.ndarray:
    """NCHW float32 RGB, (pixel - 127.5) / 128 as SCRFD was trained (OpenCV's blob is the fastest way)."""
    size = (canvas_bgr.shape[1], canvas_bgr.shape[0])
    return cv2.dnn.blobFromImage(canvas_bgr, 1.0 / 128.0, size, (127.5, 127.5, 127.5), swapRB=True)


@functools.lru_cache(maxsize=32)
def _anchor_centers(rows: int, cols: int, stride: int, anchors: int) -> np.ndarray:
    """(x, y) of every anchor of a stride's feature map, row-major, each repeated per anchor."""
    xs, ys = np.meshgrid(np.arange(cols), np.arange(rows))
    grid = np.stack([xs, ys], axis=-1).astype(np.float32)
    centers = np.repeat((grid * stride).reshape(-1, 2), anchors, axis=0)
    centers.setflags(write=False)
    return centers


def _decode_stride(
    outputs: tuple[np.ndarray, np.ndarray, np.ndarray], centers: np.ndarray, stride: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, boxes (x1, y1, x2, y2) and keypoints (n, 5, 2) of one stride's anchors at or above threshold.

    The network predicts distances from the anchor centre in units of the stride.
    """
    scores, distances, offsets = (out.reshape(-1, out.shape[-1]) for out in outputs)
    keep = np.where(scores[:, 0] >= threshold)[0]
    distances, offsets, kept_centers = distances[keep] * stride, offsets[keep] * stride, centers[keep]
    boxes = np.hstack([kept_centers - distances[:, :2], kept_centers + distances[:, 2:]])
    keypoints = kept_centers[:, None, :] + offsets.reshape(len(keep), offsets.shape[1] // 2, 2)
    return scores[keep, 0], boxes, keypoints


def _nms(dets: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression over rows (x1, y1, x2, y2, score), insightface's +1 pixel convention."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = width * height
        order = rest[overlap / (areas[best] + areas[rest] - overlap) <= threshold]
    return keep


class ScrfdDetector:
    """InsightFace's SCRFD run with onnxruntime directly (letterboxed to a fixed input, 640x640 by default).

    A port of insightface's `model_zoo.scrfd.SCRFD.detect` (same decoding, score order and NMS, so the
    same boxes, scores and landmarks) that needs neither insightface nor a second OpenCV.
    """

    nms_threshold = 0.4

    def __init__(self, entry: ModelEntry, path: Path, providers: list[str], input_size: int = 640):
        self.model_id = entry.id
        self._session, self._width, self._height = _scrfd_session(path, providers, input_size)
        self._input_name = self._session.get_inputs()[0].name
        self._strides, self._anchors = _scrfd_layout(len(self._session.get_outputs()))
        # one inference at a time: each run already uses every core, concurrent ones would only contend
        self._lock = threading.Lock()

    def _candidates(self, image_bgr: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """All anchors at or above threshold as rows (x1, y1, x2, y2, score) in image pixels, best first."""
        canvas, scale = _letterbox(image_bgr, self._width, self._height)
        with self._lock:
            outputs = self._session.run(None, {self._input_name: _scrfd_blob(canvas)})
        levels = len(self._strides)
        found = [
            _decode_stride(
                (outputs[i], outputs[i + levels], outputs[i + 2 * levels]),
                _anchor_centers(self._height // stride, self._width // stride, stride, self._anchors),
                stride,
                threshold,
            )
            for i, stride in enumerate(self._strides)
        ]
        scores = np.concatenate([level[0] for level in found])
        order = np.argsort(-scores, kind="stable")
        boxes = np.vstack([level[1] for level in found]) / scale
        keypoints = np.vstack([level[2] for level in found]) / scale
        dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
        return dets[order], keypoints[order]

    def detect(self, image_bgr: np.ndarray, score_threshold: float) -> list[Detection]:
        dets, keypoints = self._candidates(image_bgr, float(score_threshold))
        return [
            Detection(
                np.asarray(dets[i, :4], dtype=np.float64),
                np.asarray(keypoints[i], dtype=np.float64),
                float(dets[i, 4]),
            )
            for i in _nms(dets, self.nms_threshold)
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
