"""Same-space calibration: thresholds for comparing two embeddings of one model."""

from __future__ import annotations

import datetime as dt

import numpy as np

from facebridge import __version__
from facebridge.embedding_cache import EmbeddingCache
from facebridge.mapping.calibration import SPACE_METHOD, calibrate, genuine_impostor_scores
from facebridge.mapping.mapfile import SpaceCalibration, SpaceRef


def calibrate_space(
    cache: EmbeddingCache, dataset: str, max_images: int = 8000, seed: int = 0
) -> SpaceCalibration:
    """All-vs-all genuine/impostor scores over the cache's detected faces (sub-sampled above
    `max_images` to bound memory) turned into thresholds."""
    rows = np.nonzero(cache.detected)[0]
    if len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_images, replace=False))
    embeddings, identities = cache.embeddings[rows], cache.identities[rows]
    genuine, impostor = genuine_impostor_scores(embeddings, embeddings, identities, seed=seed)
    meta = cache.meta
    n_identities = len(np.unique(identities))
    calibration = calibrate(
        genuine, impostor, dataset=dataset, images=len(rows), identities=n_identities, method=SPACE_METHOD
    )
    return SpaceCalibration(
        space=SpaceRef(model=str(meta["model"]), dim=int(str(meta["dim"])), sha256=str(meta["model_sha256"])),
        dataset=dataset,
        images=len(rows),
        identities=n_identities,
        calibration=calibration,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        code_version=__version__,
    )
