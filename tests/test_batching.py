"""Micro-batching of concurrent /embed work: same embeddings as unbatched runs, fewer inference runs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from facebridge.vision.alignment import align_face
from facebridge.vision.batching import MicroBatcher
from facebridge.vision.pipeline import DetectionOptions, FacePipeline

from .conftest import lfw_image

PEOPLE = [("Colin_Powell", 1), ("AJ_Cook", 1), ("Abel_Pacheco", 1), ("Aaron_Peirsol", 1)] * 4


@pytest.fixture(scope="module")
def crops(pipeline: FacePipeline, lfw: Path) -> list[np.ndarray]:
    recognizer = pipeline.registry.recognizer("arcface-mbf128")
    template = pipeline.registry.manifest.templates[recognizer.entry.alignment or ""]
    center = DetectionOptions(policy="center", score_threshold=0.3)
    out = []
    for name, number in PEOPLE:
        image = lfw_image(lfw, name, number)
        out.append(align_face(image, pipeline.detect(image, center)[0].landmarks, template))
    return out


@pytest.mark.parametrize(
    "model_id", ["arcface-mbf128", "faceplugin-mbf512"]
)  # batchable and fixed-batch graphs
def test_concurrent_requests_share_runs_and_get_their_own_rows(
    pipeline: FacePipeline, crops: list[np.ndarray], model_id: str
) -> None:
    recognizer = pipeline.registry.recognizer(model_id)
    template = pipeline.registry.manifest.templates[recognizer.entry.alignment or ""]
    if recognizer.size != crops[0].shape[0]:
        pytest.skip("crops are aligned for 112-pixel models")
    assert template is not None
    expected = np.stack([recognizer.embed([c])[0] for c in crops])
    batcher = MicroBatcher(recognizer, max_batch=32, max_wait_ms=50)
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(crops))

    def request(i: int) -> None:
        barrier.wait()
        results[i] = batcher.embed([crops[i]])[0]

    threads = [threading.Thread(target=request, args=(i,)) for i in range(len(crops))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = np.stack([results[i] for i in range(len(crops))])
    np.testing.assert_allclose(got, expected, atol=1e-4)  # every caller got its own face back
    assert batcher.crops == len(crops) and batcher.runs < len(crops) / 2, batcher.runs


def test_a_failed_run_reaches_every_waiting_caller(pipeline: FacePipeline) -> None:
    batcher = MicroBatcher(pipeline.registry.recognizer("arcface-mbf128"), max_wait_ms=1)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type for a wrong shape
        batcher.embed([np.zeros((5, 7, 3), np.uint8)])
    assert batcher.embed([]).shape == (0, 128)


def test_pipeline_with_micro_batching_matches_without(pipeline: FacePipeline, lfw: Path) -> None:
    batched = FacePipeline(pipeline.registry, micro_batch_ms=2.0)
    image = lfw_image(lfw, "Colin_Powell", 1)
    options = DetectionOptions()
    plain = pipeline.embed_image(image, ["arcface-mbf128", "dlib-r29-128"], options)[0]
    merged = batched.embed_image(image, ["arcface-mbf128", "dlib-r29-128"], options)[0]
    for a, b in zip(plain.embeddings, merged.embeddings, strict=True):
        np.testing.assert_allclose(a.vector, b.vector, atol=1e-5)
