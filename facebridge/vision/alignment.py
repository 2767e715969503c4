"""Five-point similarity alignment of a detected face onto a recognizer's crop template.

Every template goes through the same float32 Umeyama fit and `cv2.warpAffine`: for the ArcFace template
this reproduces insightface's `face_align.norm_crop` pixel for pixel (the crops the ArcFace-family
recognizers were trained on) without depending on insightface or scikit-image.
"""

from __future__ import annotations

import cv2
import numpy as np

from facebridge.vision.manifest import AlignmentTemplate

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def _reflection_sign(
    covariance: np.ndarray, u: np.ndarray, vt: np.ndarray, singular: np.ndarray
) -> np.ndarray:
    """Umeyama's S: flip the last axis when the best orthogonal fit would be a reflection.

    det(covariance) decides when it has full rank; for collinear points (rank 1) det(U) det(V) does.
    """
    sign = np.ones(2)
    tolerance = singular.max() * max(covariance.shape) * np.finfo(float).eps
    if np.count_nonzero(singular > tolerance) < 2:
        if np.linalg.det(u) * np.linalg.det(vt) < 0:
            sign[-1] = -1.0
    elif np.linalg.det(covariance) < 0:
        sign[-1] = -1.0
    return sign


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking `source` onto `target`.

    Umeyama's closed form; returns the 2x3 float64 matrix for cv2.warpAffine. The fit runs in the inputs'
    precision with scikit-image's order of operations, so float32 points give exactly the matrix of
    `SimilarityTransform.estimate` (used by insightface's `estimate_norm`).
    """
    dtype = np.result_type(np.asarray(source).dtype, np.asarray(target).dtype, np.float32)
    src, dst = np.asarray(source, dtype=dtype), np.asarray(target, dtype=dtype)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = _reflection_sign(covariance, u, vt, singular)
    rotation = u @ np.diag(sign) @ vt
    scale = 1.0 / src_c.var(axis=0).sum() * (singular @ sign)
    matrix = np.empty((2, 3))
    matrix[:, 2] = dst_mean - scale * (rotation @ src_mean)
    matrix[:, :2] = rotation * scale
    return matrix


def align_face(image: np.ndarray, landmarks: np.ndarray, template: AlignmentTemplate) -> np.ndarray:
    """Warp `image` so the five `landmarks` land on the template; returns a size x size crop.

    Landmarks and template are fitted in float32, as insightface does for the ArcFace template.
    """
    points = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    matrix = similarity_transform(points, np.asarray(template.points, dtype=np.float32))
    return cv2.warpAffine(image, matrix, (template.size, template.size), borderValue=0.0)
