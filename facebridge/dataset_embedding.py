"""Embedding a labelled photo folder with several models at once, clean or augmented, into caches.

One landmark cache per dataset and detector is shared by every model and every augmentation, so each
photo is detected once; each (dataset, augmentation, model) gets its own `EmbeddingCache` file, named
so any study finds it (`dataset_cache_path`). Writing is checkpointed and a rerun computes only the
photos a cache lacks, so a killed run resumes and studies share the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facebridge.embedding_cache import CACHE_FORMAT, EmbeddingCache, central_face, content_digest, list_images
from facebridge.progress import bar_disabled
from facebridge.vision.alignment import align_face
from facebridge.vision.augment import AUGMENTATIONS, augment
from facebridge.vision.images import decode_image
from facebridge.vision.pipeline import FacePipeline

CLEAN = "clean"


def dataset_cache_path(cache_dir: Path, dataset: str, model: str, augmentation: str = CLEAN) -> Path:
    """`DATASET-MODEL.npz` for original photos, `DATASET~KIND-MODEL.npz` for an augmented variant."""
    tag = dataset if augmentation == CLEAN else f"{dataset}~{augmentation}"
    return cache_dir / f"{tag}-{model}.npz"


def landmarks_path(cache_dir: Path, dataset: str, detector: str) -> Path:
    return cache_dir / f"{dataset}-landmarks-{detector}.npz"


def _read(root: Path, rel: str) -> tuple[np.ndarray, str]:
    data = (root / rel).read_bytes()
    return decode_image(data, max_bytes=1 << 30, max_pixels=1 << 28), content_digest(data)


def dataset_landmarks(
    pipeline: FacePipeline, root: Path, paths: list[str], out: Path, detector: str, progress: bool = True
) -> np.ndarray:
    """(n, 5, 2) landmarks of each photo's central face (NaN where none is found), cached in `out`.

    The same thresholds and face choice as the embedding caches, so crops match their embeddings.
    Rows already in `out` for the same paths are reused.
    """
    known: dict[str, np.ndarray] = {}
    if out.exists():
        with np.load(out, allow_pickle=False) as data:
            known = dict(zip(map(str, data["paths"]), np.asarray(data["landmarks"]), strict=True))
    landmarks = np.full((len(paths), 5, 2), np.nan, np.float32)
    todo = []
    for i, rel in enumerate(paths):
        if rel in known:
            landmarks[i] = known[rel]
        else:
            todo.append(i)
    for i in tqdm(todo, desc="landmarks", unit="img", disable=bar_disabled(progress)):
        image, _ = _read(root, paths[i])
        face = central_face(pipeline, image, detector)
        if face is not None:
            landmarks[i] = np.asarray(face.landmarks, np.float32).reshape(5, 2)
    if todo or not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp.npz")
        np.savez(tmp, paths=np.array(paths), landmarks=landmarks)
        tmp.replace(out)
    return landmarks


class _Rows:
    """One model's cache under construction: previous rows reused when the weights and variant match."""

    def __init__(self, out: Path, meta: dict[str, object], dim: int):
        self.out, self.meta, self.dim = out, meta, dim
        self.rows: dict[str, tuple[str, bool, np.ndarray]] = {}
        if out.exists():
            old = EmbeddingCache.load(out)
            keys = ("model_sha256", "detector_sha256", "dim", "augmentation", "seed")
            if all(old.meta.get(k) == meta.get(k) for k in keys):
                self.rows = {
                    str(p): (str(d), bool(f), e)
                    for p, d, f, e in zip(old.paths, old.digests, old.detected, old.embeddings, strict=True)
                }

    def has(self, rel: str, digest: str | None) -> bool:
        row = self.rows.get(rel)
        return row is not None and (digest is None or row[0] == digest)

    def cache(self) -> EmbeddingCache:
        keys = sorted(self.rows)
        return EmbeddingCache(
            self.meta,
            np.array(keys, dtype=str),
            np.array([k.split("/", 1)[0] for k in keys], dtype=str),
            np.array([self.rows[k][0] for k in keys], dtype=str),
            np.array([self.rows[k][1] for k in keys], dtype=bool),
            np.stack([self.rows[k][2] for k in keys]).astype(np.float32)
            if keys
            else np.empty((0, self.dim), np.float32),
        )

    def save(self) -> EmbeddingCache:
        cache = self.cache()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        cache.save(self.out)
        return cache


def embed_dataset(
    pipeline: FacePipeline,
    root: Path,
    dataset: str,
    models: Sequence[str],
    cache_dir: Path,
    augmentation: str = CLEAN,
    seed: int = 0,
    detector: str = "yunet",
    batch: int = 32,
    checkpoint_every: int = 2000,
    progress: bool = True,
    subset: int | None = None,
) -> dict[str, EmbeddingCache]:
    """Embed every photo under `root` (one sub-folder per identity) with each model.

    Clean: every photo, the whole photo as a crop where no face is found (`detected` False), like
    `build_cache`. Augmented: the `augmentation` variant of every photo with a detected face, the
    same variant (same pixels, same landmarks) for every model. `subset`: only that many photos,
    drawn with `seed` (the same draw for every kind, so a larger subset later extends a smaller one).
    """
    if augmentation != CLEAN and augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; choose from {', '.join(AUGMENTATIONS)}")
    paths = list_images(root)
    points = dataset_landmarks(
        pipeline, root, paths, landmarks_path(cache_dir, dataset, detector), detector, progress
    )
    detector_sha = pipeline.registry.status[detector].sha256
    builders: dict[str, _Rows] = {}
    for model_id in models:
        recognizer = pipeline.registry.recognizer(model_id)
        meta: dict[str, object] = {
            "format": CACHE_FORMAT,
            "model": model_id,
            "model_sha256": recognizer.sha256,
            "detector": detector,
            "detector_sha256": detector_sha,
            "dim": recognizer.dim,
            "normalized": True,
            "root": str(root),
            "dataset": dataset,
            "augmentation": augmentation,
            "seed": seed,
        }
        out = dataset_cache_path(cache_dir, dataset, model_id, augmentation)
        builders[model_id] = _Rows(out, meta, recognizer.dim)

    found = ~np.isnan(points[:, 0, 0])
    wanted = [i for i in range(len(paths)) if augmentation == CLEAN or found[i]]
    if subset is not None and subset < len(wanted):
        wanted = sorted(np.random.default_rng(seed).permutation(wanted)[:subset].tolist())
    # a cheap pre-check without reading files: rows missing from any model's cache
    todo = [i for i in wanted if not all(b.has(paths[i], None) for b in builders.values())]
    done_since_checkpoint = 0
    bar = tqdm(
        total=len(todo), desc=f"embed {dataset}:{augmentation}", unit="img", disable=bar_disabled(progress)
    )
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        images, digests, landmarks, aligned = [], [], [], []
        for i in chunk:
            image, digest = _read(root, paths[i])
            if found[i] and augmentation != CLEAN:
                image, lm = augment(image, points[i], augmentation, paths[i], seed)
            else:
                lm = points[i]
            images.append(image)
            digests.append(digest)
            landmarks.append(lm)
            aligned.append(bool(found[i]))
        for model_id, builder in builders.items():
            _embed_chunk(
                pipeline, model_id, builder, [paths[i] for i in chunk], images, landmarks, aligned, digests
            )
        bar.update(len(chunk))
        done_since_checkpoint += len(chunk)
        if done_since_checkpoint >= checkpoint_every:
            for builder in builders.values():
                builder.save()
            done_since_checkpoint = 0
    bar.close()
    return {model_id: builder.save() for model_id, builder in builders.items()}


def _embed_chunk(
    pipeline: FacePipeline,
    model_id: str,
    builder: _Rows,
    rels: list[str],
    images: list[np.ndarray],
    landmarks: list[np.ndarray],
    aligned: list[bool],
    digests: list[str],
) -> None:
    """Embed one chunk of photos with one model: aligned faces in one batch, undetected ones whole."""
    recognizer = pipeline.registry.recognizer(model_id)
    template = pipeline.registry.manifest.templates[recognizer.entry.alignment or ""]
    faces = [k for k, ok in enumerate(aligned) if ok]
    crops = [align_face(images[k], landmarks[k], template) for k in faces]
    vectors = recognizer.embed(crops) if crops else np.empty((0, recognizer.dim), np.float32)
    for k, vector in zip(faces, vectors, strict=True):
        builder.rows[rels[k]] = (digests[k], True, vector)
    for k in (k for k, ok in enumerate(aligned) if not ok):
        vector = pipeline.embed_aligned(images[k], [model_id]).embeddings[0].vector
        builder.rows[rels[k]] = (digests[k], False, vector)
