"""Embedding a folder of photos (one sub-folder per identity) into a resumable cache file.

The cache is a plain .npz (no pickle): embeddings, identity, relative path and a content digest per
image, plus JSON metadata naming the model and detector weights by sha256. A re-run reuses every row
whose file digest is unchanged, and a run that is killed resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from facebridge.progress import bar_disabled
from facebridge.vision.images import decode_image

if TYPE_CHECKING:  # the vision stack (onnxruntime) loads only where photos are embedded
    from facebridge.vision.detection import Detection
    from facebridge.vision.pipeline import FacePipeline

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CACHE_FORMAT = 1
# Detection thresholds tried in turn for dataset photos: a missed face is retried more leniently.
DATASET_THRESHOLDS = (0.6, 0.3, 0.1)


@dataclass
class EmbeddingCache:
    """Rows of one model's embeddings over a dataset; `detected` is False where no face was found."""

    meta: dict[str, object]
    paths: np.ndarray  # relative paths, str
    identities: np.ndarray  # str
    digests: np.ndarray  # str
    detected: np.ndarray  # bool
    embeddings: np.ndarray  # (n, dim) float32

    def __len__(self) -> int:
        return len(self.paths)

    def index(self) -> dict[str, int]:
        return {str(p): i for i, p in enumerate(self.paths)}

    def lookup(self, paths: Iterable[str]) -> np.ndarray:
        """Embeddings for the given relative paths, in that order (KeyError if one is missing)."""
        index = self.index()
        return self.embeddings[[index[p] for p in paths]]

    def save(self, path: Path) -> None:
        """Atomic write: a crash leaves the previous file intact."""
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            meta=np.array(json.dumps(self.meta)),
            paths=self.paths.astype(str),
            identities=self.identities.astype(str),
            digests=self.digests.astype(str),
            detected=self.detected,
            embeddings=self.embeddings.astype(np.float32),
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> EmbeddingCache:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                json.loads(str(data["meta"])),
                data["paths"],
                data["identities"],
                data["digests"],
                data["detected"],
                data["embeddings"],
            )


def list_images(root: Path) -> list[str]:
    """Relative paths of images in identity sub-folders, sorted."""
    return sorted(
        str(p.relative_to(root))
        for p in root.glob("*/*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def content_digest(data: bytes) -> str:
    """The digest a cache row keeps of its photo file, to notice when the file changes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: Path) -> str:
    return content_digest(path.read_bytes())


def central_face(pipeline: FacePipeline, image_bgr: np.ndarray, detector: str) -> Detection | None:
    """The central face of a dataset photo, retried at lower detection thresholds; None if none."""
    from facebridge.vision.pipeline import DetectionOptions

    for threshold in DATASET_THRESHOLDS:
        options = DetectionOptions(detector=detector, score_threshold=threshold, max_faces=1, policy="center")
        faces = pipeline.detect(image_bgr, options)
        if faces:
            return faces[0]
    return None


def embed_one(
    pipeline: FacePipeline, image_bgr: np.ndarray, model_id: str, detector: str
) -> tuple[np.ndarray, bool]:
    """Embed the central face of a dataset photo; falls back to the whole image as an aligned crop
    only when no threshold finds a face, and reports that through the returned flag."""
    face = central_face(pipeline, image_bgr, detector)
    if face is not None:
        return pipeline.embed_faces(image_bgr, [face], [model_id])[0].embeddings[0].vector, True
    return pipeline.embed_aligned(image_bgr, [model_id]).embeddings[0].vector, False


def build_cache(
    pipeline: FacePipeline,
    root: Path,
    model_id: str,
    out: Path,
    detector: str = "yunet",
    only: list[str] | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
    on_row: Callable[[int], None] | None = None,
) -> EmbeddingCache:
    """Embed every image under `root` (or the `only` subset) with `model_id`, reusing `out` if present."""
    recognizer = pipeline.registry.recognizer(model_id)
    detector_status = pipeline.registry.status[detector]
    meta: dict[str, object] = {
        "format": CACHE_FORMAT,
        "model": model_id,
        "model_sha256": recognizer.sha256,
        "detector": detector,
        "detector_sha256": detector_status.sha256,
        "dim": recognizer.dim,
        "normalized": True,
        "root": str(root),
    }
    wanted = only if only is not None else list_images(root)
    previous: dict[str, tuple[str, bool, np.ndarray]] = {}
    if out.exists():
        old = EmbeddingCache.load(out)
        same_weights = all(old.meta.get(k) == meta[k] for k in ("model_sha256", "detector_sha256", "dim"))
        if same_weights:
            previous = {
                str(p): (str(d), bool(f), e)
                for p, d, f, e in zip(old.paths, old.digests, old.detected, old.embeddings, strict=True)
            }

    rows: dict[str, tuple[str, bool, np.ndarray]] = {}

    def snapshot() -> EmbeddingCache:
        # keep rows for files not yet revisited so an interrupted run loses nothing it had
        merged = {**previous, **rows}
        keys = sorted(merged)
        return EmbeddingCache(
            meta,
            np.array(keys, dtype=str),
            np.array([k.split("/", 1)[0] for k in keys], dtype=str),
            np.array([merged[k][0] for k in keys], dtype=str),
            np.array([merged[k][1] for k in keys], dtype=bool),
            np.stack([merged[k][2] for k in keys]).astype(np.float32)
            if keys
            else np.empty((0, recognizer.dim), np.float32),
        )

    computed = 0
    for i, rel in enumerate(
        tqdm(wanted, desc=f"embed {model_id}", unit="img", disable=bar_disabled(progress))
    ):
        digest = file_digest(root / rel)
        cached = previous.get(rel)
        if cached is not None and cached[0] == digest:
            rows[rel] = cached
            continue
        image = decode_image((root / rel).read_bytes(), max_bytes=1 << 30, max_pixels=1 << 28)
        vector, found = embed_one(pipeline, image, model_id, detector)
        rows[rel] = (digest, found, vector)
        computed += 1
        if on_row is not None:
            on_row(i)
        if computed % checkpoint_every == 0:
            snapshot().save(out)
    # rows of files that were deleted since the last run are dropped; other cached rows are kept
    for rel in [k for k in previous if k not in rows and not (root / k).is_file()]:
        del previous[rel]
    cache = snapshot()
    cache.save(out)
    return cache
