"""POST /embed and the service skeleton over a real uvicorn server on loopback."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from facebridge.vision.pipeline import DetectionOptions, FacePipeline

from .conftest import lfw_image
from .problems import assert_problem

PHOTO = ("Colin_Powell", 10)


def _photo_bytes(lfw: Path, name: str = PHOTO[0], number: int = PHOTO[1]) -> bytes:
    return (lfw / name / f"{name}_{number:04d}.jpg").read_bytes()


def _jpeg(image_bgr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def test_probes_models_and_docs(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and "arcface-mbf128" in ready["models_loaded"]
    models = {m["id"]: m for m in client.get("/models").json()["models"]}
    assert models["arcface-mbf128"]["state"] == "loaded"
    assert models["arcface-mbf128"]["file_sha256"] == models["arcface-mbf128"]["sha256"]
    assert models["sface"]["state"] == "unavailable"
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/embed", "/models", "/healthz", "/readyz"} <= set(spec["paths"])
    assert {"application/json", "multipart/form-data", "application/x-npy"} <= set(
        spec["paths"]["/embed"]["post"]["requestBody"]["content"]
    )
    assert "channels" in {p["name"] for p in spec["paths"]["/embed"]["post"]["parameters"]}


def test_multipart_embedding_equals_library_call(
    client: httpx.Client, pipeline: FacePipeline, lfw: Path
) -> None:
    response = client.post(
        "/embed",
        files={"images": ("p.jpg", _photo_bytes(lfw), "image/jpeg")},
        data={"models": "arcface-mbf128,hse-mobilenet1024", "largest_only": "true"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["detector"]["id"] == "yunet" and len(body["detector"]["sha256"]) == 64
    face = body["results"][0]["faces"][0]
    library = pipeline.embed_image(
        lfw_image(lfw, *PHOTO), ["arcface-mbf128", "hse-mobilenet1024"], DetectionOptions(max_faces=1)
    )[0]
    assert library.detection is not None
    np.testing.assert_allclose(face["box"], library.detection.box, atol=0.01)
    assert face["detection_score"] == pytest.approx(library.detection.score, abs=1e-4)
    for served, local in zip(face["embeddings"], library.embeddings, strict=True):
        assert served["model"] == local.model_id and served["sha256"] == local.sha256
        assert served["dim"] == len(local.vector) and served["normalized"] is True
        np.testing.assert_allclose(served["embedding"], local.vector, atol=1e-6)


def test_base64_batch_raw_and_aligned(client: httpx.Client, pipeline: FacePipeline, lfw: Path) -> None:
    photos = [_photo_bytes(lfw), _photo_bytes(lfw, "AJ_Cook", 1)]
    body = {
        "images": [{"data": base64.b64encode(p).decode()} for p in photos],
        "models": ["dlib-r29-128"],
        "normalize": False,
    }
    response = client.post("/embed", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1] and results[0]["width"] == 250
    raw = np.array(results[0]["faces"][0]["embeddings"][0]["embedding"])
    assert not np.isclose(np.linalg.norm(raw), 1.0)
    # an already aligned crop skips detection and gives the library's embedding of that crop
    image = lfw_image(lfw, *PHOTO)
    template = pipeline.registry.manifest.templates["arcface112"]
    from facebridge.vision.alignment import align_face

    crop = align_face(image, pipeline.detect(image, DetectionOptions())[0].landmarks, template)
    png = cv2.imencode(".png", crop)[1].tobytes()
    aligned = client.post(
        "/embed",
        json={
            "image": {"data": "data:image/png;base64," + base64.b64encode(png).decode()},
            "aligned": True,
            "models": ["arcface-mbf128"],
        },
    )
    assert aligned.status_code == 200, aligned.text
    face = aligned.json()["results"][0]["faces"][0]
    assert face["box"] is None and aligned.json()["detector"] is None
    expected = pipeline.registry.recognizer("arcface-mbf128").embed([crop])[0]
    np.testing.assert_allclose(face["embeddings"][0]["embedding"], expected, atol=1e-6)


def test_max_faces_and_largest_only(client: httpx.Client, lfw: Path) -> None:
    canvas = np.zeros((250, 500, 3), np.uint8)
    canvas[:, :250] = lfw_image(lfw, "Aaron_Eckhart", 1)
    canvas[60:185, 300:425] = cv2.resize(lfw_image(lfw, "AJ_Cook", 1), (125, 125))
    files = {"images": ("two.jpg", _jpeg(canvas), "image/jpeg")}
    both = client.post("/embed", files=files).json()["results"][0]["faces"]
    assert len(both) >= 2
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in both]
    assert areas == sorted(areas, reverse=True)
    assert (
        len(client.post("/embed", files=files, data={"largest_only": "true"}).json()["results"][0]["faces"])
        == 1
    )
    assert len(client.post("/embed", files=files, data={"max_faces": "1"}).json()["results"][0]["faces"]) == 1


def test_error_paths_answer_problem_json(client: httpx.Client, lfw: Path) -> None:
    photo = base64.b64encode(_photo_bytes(lfw)).decode()
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank, format="PNG")

    assert_problem(
        client.post("/embed", json={"images": [{"data": base64.b64encode(b"hello").decode()}]}),
        422,
        "undecodable-image",
        "images[0]",
    )
    assert_problem(
        client.post("/embed", json={"images": [{"data": photo}, {"data": "@@not base64@@"}]}),
        422,
        "invalid-base64",
        "images[1].data",
    )
    assert_problem(
        client.post("/embed", files={"images": ("b.png", blank.getvalue(), "image/png")}),
        422,
        "no-face",
        "images[0]",
    )
    assert_problem(
        client.post("/embed", json={"image": {"data": photo}, "models": ["arcface-mbf128", "nope"]}),
        404,
        "unknown-model",
        "models[1]",
    )
    assert_problem(
        client.post("/embed", json={"image": {"data": photo}, "models": ["sface"]}),
        409,
        "model-unavailable",
        "models[0]",
    )
    assert_problem(
        client.post("/embed", json={"image": {"data": photo}, "detector": "nope"}),
        404,
        "unknown-model",
        "detector",
    )
    assert_problem(
        client.post("/embed", json={"image": {"data": photo}, "models": ["yunet"]}),
        409,
        "model-unavailable",
        "models[0]",
    )
    # server limits: 2,000,000 bytes, 4,000,000 pixels, 4 images per request
    big = np.random.default_rng(0).integers(0, 255, (900, 900, 3), np.uint8)
    big_png = cv2.imencode(".png", big)[1].tobytes()
    assert len(big_png) > 2_000_000
    assert_problem(
        client.post("/embed", files={"images": ("big.png", big_png, "image/png")}),
        413,
        "image-too-large",
        "images[0]",
    )
    wide = io.BytesIO()
    Image.new("L", (2100, 2000)).save(wide, format="PNG")
    assert_problem(
        client.post("/embed", files={"images": ("wide.png", wide.getvalue(), "image/png")}),
        413,
        "image-too-large",
        "images[0]",
    )
    assert_problem(
        client.post("/embed", json={"images": [{"data": photo}] * 5}), 413, "batch-too-large", "images"
    )
    assert_problem(client.post("/embed", json={"images": []}), 422, "validation-error", "images")
    assert_problem(
        client.post("/embed", json={"image": {"data": photo}, "max_faces": 0}),
        422,
        "validation-error",
        "max_faces",
    )
    assert_problem(
        client.post("/embed", json={"image": {"data": photo}, "images": [{"data": photo}]}),
        422,
        "validation-error",
    )
    assert_problem(
        client.post("/embed", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "validation-error",
    )
    assert_problem(
        client.post("/embed", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported-media-type",
    )
    assert_problem(
        client.post("/embed", data={"models": "arcface-mbf128"}, files={"other": ("x", b"x")}),
        422,
        "validation-error",
        "images",
    )
    assert_problem(client.get("/nowhere"), 404, "not-found")
    assert_problem(client.get("/embed"), 405, "method-not-allowed")


def test_full_network_mode_serves_ternary_codes_equal_to_the_library(
    client: httpx.Client, pipeline: FacePipeline, maps_dir: Path, lfw: Path
) -> None:
    from facebridge.vision.alignment import align_face
    from facebridge.vision.full_network import FullNetworkModel, stats_path

    response = client.post(
        "/embed",
        files={"images": ("p.jpg", _photo_bytes(lfw), "image/jpeg")},
        data={"models": "arcface-mbf128", "largest_only": "true", "mode": "full-network"},
    )
    assert response.status_code == 200, response.text
    served = response.json()["results"][0]["faces"][0]["embeddings"][0]
    assert served["mode"] == "full-network" and served["normalized"] is False
    codes = np.array(served["embedding"])
    assert served["dim"] == len(codes) > 5000 and set(np.unique(codes)) == {-1.0, 0.0, 1.0}
    # the same codes in process, from the stored statistics and the same aligned crop
    registry = pipeline.registry
    recognizer = registry.recognizer("arcface-mbf128")
    image = lfw_image(lfw, *PHOTO)
    face = pipeline.detect(image, DetectionOptions(max_faces=1))[0]
    crop = align_face(image, face.landmarks, registry.manifest.templates[recognizer.entry.alignment or ""])
    local = FullNetworkModel(
        registry.model_path("arcface-mbf128"),
        stats_path(maps_dir, "arcface-mbf128"),
        recognizer.sha256,
        ["CPUExecutionProvider"],
    ).codes(recognizer.preprocess([crop]))[0]
    assert np.mean(local == codes) > 0.999  # ties at a threshold may flip under float noise

    missing = client.post(
        "/embed",
        json={"image": {"data": base64.b64encode(_photo_bytes(lfw)).decode()}, "models": ["sirius-mbf192"],
              "mode": "full-network"},
    )  # fmt: skip
    assert missing.status_code == 409
    assert missing.headers["content-type"].startswith("application/problem+json")
    problem = missing.json()
    assert problem["type"].endswith("full-network-unavailable") and "sirius-mbf192" in problem["detail"]
    bad_mode = client.post(
        "/embed", files={"images": ("p.jpg", _photo_bytes(lfw), "image/jpeg")}, data={"mode": "layers"}
    )
    assert bad_mode.status_code == 422


def _npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


NPY_HEADERS = {"content-type": "application/x-npy"}


def test_npy_pixels_embed_as_the_library_does(
    client: httpx.Client, pipeline: FacePipeline, lfw: Path
) -> None:
    """A .npy of aligned crops (either colour order) and of whole photos gives the library's embeddings."""
    from facebridge.vision.alignment import align_face

    template = pipeline.registry.manifest.templates["arcface112"]
    photos = [lfw_image(lfw, *PHOTO), lfw_image(lfw, "AJ_Cook", 1), lfw_image(lfw, "Aaron_Eckhart", 1)]
    crops = np.stack(
        [align_face(p, pipeline.detect(p, DetectionOptions())[0].landmarks, template) for p in photos]
    )
    expected = pipeline.registry.recognizer("arcface-mbf128").embed(list(crops))
    for channels, pixels in (("bgr", crops), ("rgb", np.ascontiguousarray(crops[..., ::-1]))):
        response = client.post(
            f"/embed?channels={channels}&aligned=true&models=arcface-mbf128",
            content=_npy(pixels),
            headers=NPY_HEADERS,
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["index"] for r in results] == [0, 1, 2] and results[0]["width"] == 112
        served = np.array([r["faces"][0]["embeddings"][0]["embedding"] for r in results])
        np.testing.assert_allclose(served, expected, atol=1e-6)
    # one image without the batch axis, and a swapped colour order is a different (worse) embedding
    one = client.post(
        "/embed?channels=rgb&aligned=true&models=arcface-mbf128", content=_npy(crops[0]), headers=NPY_HEADERS
    )
    assert one.status_code == 200, one.text
    swapped = np.array(one.json()["results"][0]["faces"][0]["embeddings"][0]["embedding"])
    assert float(swapped @ expected[0]) < 0.99
    # whole photos are detected and aligned as a decoded photo is
    photo = client.post(
        "/embed?channels=bgr&models=dlib-r29-128&largest_only=true",
        content=_npy(photos[0]),
        headers=NPY_HEADERS,
    )
    assert photo.status_code == 200, photo.text
    assert photo.json()["detector"]["id"] == "yunet"
    library = pipeline.embed_image(photos[0], ["dlib-r29-128"], DetectionOptions(max_faces=1))[0]
    face = photo.json()["results"][0]["faces"][0]
    np.testing.assert_allclose(face["embeddings"][0]["embedding"], library.embeddings[0].vector, atol=1e-6)


def test_npy_pixels_refused_with_problem_json(client: httpx.Client) -> None:
    crops = np.zeros((2, 112, 112, 3), np.uint8)
    url = "/embed?channels=bgr&aligned=true&models=arcface-mbf128"
    assert_problem(
        client.post("/embed?aligned=true", content=_npy(crops), headers=NPY_HEADERS),
        422,
        "validation-error",
        "channels",
    )
    assert_problem(
        client.post("/embed?channels=bgr&max_faces=0", content=_npy(crops), headers=NPY_HEADERS),
        422,
        "validation-error",
    )
    assert_problem(client.post(url, content=b"not npy", headers=NPY_HEADERS), 422, "invalid-npy", "body")
    assert_problem(client.post(url, content=_npy(crops)[:-10], headers=NPY_HEADERS), 422, "invalid-npy")
    assert_problem(
        client.post(url, content=_npy(crops.astype(np.float32)), headers=NPY_HEADERS), 422, "invalid-npy"
    )
    assert_problem(client.post(url, content=_npy(crops[..., :1]), headers=NPY_HEADERS), 422, "invalid-npy")
    assert_problem(
        client.post(url, content=_npy(np.zeros((5, 112, 112, 3), np.uint8)), headers=NPY_HEADERS),
        413,
        "batch-too-large",
    )
    assert_problem(
        client.post(url, content=_npy(np.zeros((1, 2100, 2100, 3), np.uint8)), headers=NPY_HEADERS),
        413,
        "image-too-large",
    )
    assert_problem(
        client.post(url, content=_npy(crops), headers={"content-type": "application/octet-stream"}),
        415,
        "unsupported-media-type",
    )
