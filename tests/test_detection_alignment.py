"""Both detectors find the LFW subject with landmarks where a face has them; alignment hits the template."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facebridge.vision.alignment import align_face, similarity_transform
from facebridge.vision.detection import select_faces
from facebridge.vision.pipeline import DetectionOptions, FacePipeline

from .conftest import DETECTORS, lfw_image

PEOPLE = [
    ("Aaron_Eckhart", 1),
    ("Abel_Pacheco", 1),
    ("AJ_Cook", 1),
    ("Serena_Williams", 3),
    ("Colin_Powell", 10),
]


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize(("name", "number"), PEOPLE)
def test_detector_finds_face_and_plausible_landmarks(
    pipeline: FacePipeline, lfw: Path, detector: str, name: str, number: int
) -> None:
    image = lfw_image(lfw, name, number)
    faces = pipeline.detect(image, DetectionOptions(detector=detector, score_threshold=0.5, policy="center"))
    assert faces, f"{detector} found no face in {name}"
    face = faces[0]
    x1, y1, x2, y2 = face.box
    # LFW photos are 250x250 with the subject centred
    assert 60 < (x1 + x2) / 2 < 190 and 60 < (y1 + y2) / 2 < 190
    assert 50 < x2 - x1 < 200
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))
    assert face.score > 0.5


@pytest.mark.parametrize(("name", "number"), PEOPLE)
def test_detectors_agree_on_landmarks(pipeline: FacePipeline, lfw: Path, name: str, number: int) -> None:
    image = lfw_image(lfw, name, number)
    yunet, scrfd = (
        pipeline.detect(image, DetectionOptions(detector=d, policy="center"))[0] for d in DETECTORS
    )
    eye_distance = np.linalg.norm(yunet.landmarks[1] - yunet.landmarks[0])
    assert np.abs(yunet.landmarks - scrfd.landmarks).max() < 0.25 * eye_distance


def test_no_face_in_a_blank_image(pipeline: FacePipeline) -> None:
    blank = np.full((200, 200, 3), 127, np.uint8)
    assert pipeline.detect(blank, DetectionOptions()) == []


def test_face_selection_orders_largest_or_central(pipeline: FacePipeline, lfw: Path) -> None:
    small = cv2.resize(lfw_image(lfw, "AJ_Cook", 1), (125, 125))
    canvas = np.zeros((250, 500, 3), np.uint8)
    canvas[:, :250] = lfw_image(lfw, "Aaron_Eckhart", 1)
    canvas[60:185, 300:425] = small
    faces = pipeline.registry.detector("yunet").detect(canvas, 0.5)
    assert len(faces) >= 2
    largest = select_faces(faces, canvas.shape, "largest", 2)
    assert largest[0].area >= largest[1].area and largest[0].box[0] < 250
    assert len(select_faces(faces, canvas.shape, "largest", 1)) == 1


def test_similarity_transform_recovers_known_transform() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = scale * points @ rotation.T + shift
    matrix = similarity_transform(points, target)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


@pytest.mark.parametrize("template_id", ["arcface112", "dlib150", "hse224"])
def test_aligned_crop_puts_landmarks_on_template(pipeline: FacePipeline, lfw: Path, template_id: str) -> None:
    image = lfw_image(lfw, "Colin_Powell", 10)
    face = pipeline.detect(image, DetectionOptions(policy="center"))[0]
    template = pipeline.registry.manifest.templates[template_id]
    crop = align_face(image, face.landmarks, template)
    assert crop.shape == (template.size, template.size, 3)
    # re-detecting on the crop finds the face roughly where the template says it is
    padded = cv2.copyMakeBorder(crop, 40, 40, 40, 40, cv2.BORDER_CONSTANT)
    again = pipeline.registry.detector("scrfd-500m").detect(padded, 0.3)
    assert again
    found = again[0].landmarks - 40
    assert np.abs(found - np.array(template.points)).max() < 0.12 * template.size
