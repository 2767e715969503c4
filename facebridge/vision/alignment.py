"""Five-point similarity alignment of a detected face onto a recognizer's crop template."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
from insightface.utils import face_align

from facebridge.vision.manifest import AlignmentTemplate

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking `source` onto `target`.

    Umeyama's closed form; returns the 2x3 matrix for cv2.warpAffine.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float((singular * sign).sum() / src_c.var(axis=0).sum())
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def is_arcface_template(template: AlignmentTemplate) -> bool:
    return template.size == 112 and np.allclose(np.array(template.points), ARCFACE_TEMPLATE, atol=1e-3)


def align_face(image: np.ndarray, landmarks: np.ndarray, template: AlignmentTemplate) -> np.ndarray:
    """Warp `image` so the five `landmarks` land on the template; returns a size x size crop."""
    points = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    if is_arcface_template(template):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecation inside insightface
            return np.asarray(face_align.norm_crop(image, points, image_size=112))
    matrix = similarity_transform(points, np.array(template.points, dtype=np.float64))
    return cv2.warpAffine(image, matrix, (template.size, template.size), borderValue=0.0)
