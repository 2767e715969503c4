"""Photometric and geometric variants of a dataset photo, for fitting maps on more than clean photos.

A map learns how one model's space sits in another's from photos both models saw. Clean LFW photos
cover a narrow range of capture conditions; a deployment sees blur, low resolution, compression,
grey-scale cameras, odd exposure, occlusion and alignment jitter. Each variant here is one such
condition, applied to the photo (and to its five landmarks where the geometry changes) before both
models align and embed it, so the pair (A, B) stays a true correspondence.

Every variant is deterministic per (seed, kind, photo path): a rerun or another study gets the same
pixels, so embedding caches of augmented photos are resumable and shareable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

# landmark order: left eye, right eye, nose, left mouth corner, right mouth corner (image left/right)
MIRRORED_LANDMARKS = [1, 0, 2, 4, 3]

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _face_size(landmarks: np.ndarray) -> float:
    """A face scale in pixels: eye-centre to mouth-centre distance times 2.5 (about the face height)."""
    eyes = landmarks[:2].mean(axis=0)
    mouth = landmarks[3:].mean(axis=0)
    return max(float(np.linalg.norm(mouth - eyes)), 1.0) * 2.5


def flip(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image; landmarks mirrored and re-ordered so 'left eye' is still the image-left one."""
    width = image.shape[1]
    mirrored = landmarks.copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), mirrored[MIRRORED_LANDMARKS]


def jitter(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Alignment jitter: the landmarks moved by a small similarity (±8°, ±8% scale, ±5% shift), so the
    aligned crop is rotated, scaled and shifted as an imprecise detector would leave it."""
    angle = np.deg2rad(rng.uniform(-8.0, 8.0))
    scale = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-0.05, 0.05, size=2) * _face_size(landmarks)
    centre = landmarks.mean(axis=0)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (landmarks - centre) @ rotation.T + centre + shift
    return image, moved.astype(np.float32)


def blur(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blur (defocus, motion-free): sigma 1 to 2.5 px on a 250 px photo."""
    sigma = rng.uniform(1.0, 2.5)
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma), landmarks


def downscale(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Low resolution: down to 25-50% of the size and back up (a distant or cheap camera)."""
    factor = rng.uniform(0.25, 0.5)
    height, width = image.shape[:2]
    small = cv2.resize(
        image, (max(8, round(width * factor)), max(8, round(height * factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), landmarks


def jpeg(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Heavy JPEG compression, quality 10 to 35."""
    quality = int(rng.integers(10, 36))
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return np.asarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)), landmarks


def grayscale(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A grey-scale (e.g. near-infrared) camera: luminance copied to all three channels."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), landmarks


def exposure(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Brightness and contrast: contrast x0.6-1.4, brightness ±40 levels, gamma 0.7-1.4."""
    contrast = rng.uniform(0.6, 1.4)
    brightness = rng.uniform(-40.0, 40.0)
    gamma = rng.uniform(0.7, 1.4)
    pixels = image.astype(np.float32)
    pixels = (pixels - 127.5) * contrast + 127.5 + brightness
    pixels = 255.0 * (np.clip(pixels, 0.0, 255.0) / 255.0) ** gamma
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8), landmarks


def occlusion(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A flat grey rectangle over 20-40% of the face's width and height, somewhere on the face
    (hand, scarf, sunglasses, microphone)."""
    size = _face_size(landmarks)
    centre = landmarks.mean(axis=0)
    width, height = rng.uniform(0.2, 0.4, size=2) * size
    cx, cy = centre + rng.uniform(-0.3, 0.3, size=2) * size
    x0, y0 = round(max(0.0, cx - width / 2)), round(max(0.0, cy - height / 2))
    x1 = round(min(image.shape[1], cx + width / 2))
    y1 = round(min(image.shape[0], cy + height / 2))
    out = image.copy()
    out[y0:y1, x0:x1] = int(rng.integers(0, 256))
    return out, landmarks


@dataclass(frozen=True)
class Augmentation:
    name: str
    apply: Augment
    about: str


AUGMENTATIONS: dict[str, Augmentation] = {
    a.name: a
    for a in (
        Augmentation("flip", flip, "horizontal mirror"),
        Augmentation("jitter", jitter, "alignment jitter: ±8° rotation, ±8% scale, ±5% shift"),
        Augmentation("blur", blur, "Gaussian blur, sigma 1-2.5 px"),
        Augmentation("downscale", downscale, "down to 25-50% and back up"),
        Augmentation("jpeg", jpeg, "JPEG quality 10-35"),
        Augmentation("grayscale", grayscale, "grey-scale"),
        Augmentation("exposure", exposure, "contrast x0.6-1.4, brightness ±40, gamma 0.7-1.4"),
        Augmentation("occlusion", occlusion, "grey rectangle over 20-40% of the face"),
    )
}


def variant_rng(seed: int, kind: str, path: str) -> np.random.Generator:
    """The random stream of one photo's variant: fixed by (seed, kind, path), independent of order."""
    digest = hashlib.blake2b(f"{seed}\0{kind}\0{path}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def augment(
    image: np.ndarray, landmarks: np.ndarray, kind: str, path: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The `kind` variant of one photo (BGR uint8) and its (5, 2) landmarks; deterministic per seed."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; choose from {', '.join(AUGMENTATIONS)}")
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    return AUGMENTATIONS[kind].apply(image, points, variant_rng(seed, kind, path))
