"""Every real recognizer separates same-person from different-person LFW pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facebridge.evaluation.lfw import read_pairs
from facebridge.linalg import l2_normalize
from facebridge.vision.pipeline import DetectionOptions, FacePipeline

from .conftest import RECOGNIZERS, lfw_image

CENTER = DetectionOptions(policy="center", score_threshold=0.3)


def _embed(pipeline: FacePipeline, lfw: Path, rel: str, model_id: str) -> np.ndarray:
    name, file = rel.split("/")
    image = lfw_image(lfw, name, int(file.rsplit("_", 1)[1][:4]))
    return pipeline.embed_image(image, [model_id], CENTER)[0].embeddings[0].vector


@pytest.fixture(scope="module")
def pair_sample(lfw: Path) -> list:
    pairs = read_pairs(lfw / "pairs.txt")
    genuine = [p for p in pairs if p.same and p.fold == 0][:15]
    impostor = [p for p in pairs if not p.same and p.fold == 0][:15]
    return genuine + impostor


@pytest.mark.parametrize("model_id", RECOGNIZERS)
def test_same_person_scores_higher(
    pipeline: FacePipeline, lfw: Path, pair_sample: list, model_id: str
) -> None:
    cache: dict[str, np.ndarray] = {}

    def vector(rel: str) -> np.ndarray:
        if rel not in cache:
            cache[rel] = _embed(pipeline, lfw, rel, model_id)
        return cache[rel]

    scores = np.array([float(vector(p.left) @ vector(p.right)) for p in pair_sample])
    same = np.array([p.same for p in pair_sample])
    genuine, impostor = scores[same], scores[~same]
    # score ranges differ by model (dlib's cosines sit near 1), so separation is measured as d'
    d_prime = (genuine.mean() - impostor.mean()) / np.sqrt((genuine.var() + impostor.var()) / 2)
    assert d_prime > 2.5, d_prime
    # ranking quality: most genuine pairs beat most impostor pairs
    wins = (scores[same][:, None] > scores[~same][None, :]).mean()
    assert wins > 0.93, wins


@pytest.mark.parametrize("model_id", RECOGNIZERS)
def test_embedding_shape_norm_and_batch_consistency(pipeline: FacePipeline, lfw: Path, model_id: str) -> None:
    recognizer = pipeline.registry.recognizer(model_id)
    image = lfw_image(lfw, "Colin_Powell", 10)
    face = pipeline.detect(image, CENTER)
    one = pipeline.embed_faces(image, face, [model_id])[0].embeddings[0].vector
    assert one.shape == (recognizer.dim,) and one.dtype == np.float32
    assert np.isclose(np.linalg.norm(one), 1.0, atol=1e-5)
    raw = pipeline.embed_faces(image, face, [model_id], normalize=False)[0].embeddings[0].vector
    np.testing.assert_allclose(l2_normalize(raw[None])[0], one, atol=1e-5)
    # a batch of three faces gives the same rows as three single runs
    images = [lfw_image(lfw, n, k) for n, k in [("Colin_Powell", 10), ("AJ_Cook", 1), ("Abel_Pacheco", 1)]]
    crops = []
    from facebridge.vision.alignment import align_face

    template = pipeline.registry.manifest.templates[recognizer.entry.alignment or ""]
    for img in images:
        crops.append(align_face(img, pipeline.detect(img, CENTER)[0].landmarks, template))
    batch = recognizer.embed(crops)
    singles = np.stack([recognizer.embed([c])[0] for c in crops])
    np.testing.assert_allclose(batch, singles, atol=1e-4)
    np.testing.assert_allclose(batch[0], one, atol=1e-5)
