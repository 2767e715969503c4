"""The library (Bridge) and the running service give identical numbers for the same inputs: real models,
real LFW photos, the server on a real port loading the same maps."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from facebridge.bridge import Bridge
from facebridge.config import Settings
from facebridge.exceptions import NoFaceFound

from .conftest import MODELS_DIR

ARC, FP, SIR = "arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192"
PHOTOS = [("Aaron_Peirsol", 1), ("Aaron_Peirsol", 2), ("Abdullah_Gul", 1)]


@pytest.fixture(scope="module")
def bridge(maps_dir: Path) -> Bridge:
    settings = Settings(models_dir=MODELS_DIR, mappings_dir=maps_dir, providers="cpu")
    return Bridge.from_defaults(models=[ARC, FP, SIR, "yunet"], settings=settings)


def _photo(lfw: Path, name: str, number: int) -> bytes:
    return (lfw / name / f"{name}_{number:04d}.jpg").read_bytes()


def test_embed_is_identical_in_library_and_service(bridge: Bridge, client: httpx.Client, lfw: Path) -> None:
    data = _photo(lfw, *PHOTOS[0])
    library = bridge.embed(data, models=[ARC, SIR], largest_only=True)
    answer = client.post(
        "/embed",
        files=[("images", ("a.jpg", data, "image/jpeg"))],
        data={"models": f"{ARC},{SIR}", "largest_only": "true"},
    ).json()
    served = answer["results"][0]
    assert served == library.model_dump(mode="json")


def test_verify_with_photos_and_templates_is_identical(
    bridge: Bridge, client: httpx.Client, lfw: Path
) -> None:
    photos = [_photo(lfw, *p) for p in PHOTOS]
    templates = [
        bridge.embed(p, models=[ARC], largest_only=True).faces[0].embeddings[0].embedding for p in photos
    ]
    pairs = [
        ((ARC, templates[0]), (SIR, photos[1])),  # same person, across models, photo side embedded
        ((ARC, templates[0]), (SIR, photos[2])),  # different people
        ((ARC, templates[1]), (FP, photos[0])),  # a direct map
    ]
    library = bridge.verify_pairs(pairs, far=0.001)
    body = {
        "pairs": [
            {
                "a": {"model": a_model, "embedding": a_value},
                "b": {"model": b_model, "image": base64.b64encode(b_value).decode()},
            }
            for (a_model, a_value), (b_model, b_value) in pairs
        ],
        "far": 0.001,
    }
    served = client.post("/verify", json=body).json()["results"]
    assert [r.model_dump(mode="json") for r in library] == served
    assert library[0].score > library[1].score


def test_translate_is_identical(bridge: Bridge, client: httpx.Client) -> None:
    rows = np.random.default_rng(3).normal(size=(20, 128)).astype(np.float32)
    library = bridge.translate(rows, ARC, SIR)
    served = client.post(
        "/translate", json={"source": ARC, "target": SIR, "embeddings": rows.tolist()}
    ).json()
    np.testing.assert_array_equal(np.asarray(served["embeddings"], np.float32), library.embeddings)
    assert served["maps"] == [m.model_dump() for m in library.maps]


def test_library_errors_name_the_field(bridge: Bridge) -> None:
    blank = np.zeros((200, 200, 3), np.uint8)
    with pytest.raises(NoFaceFound) as raised:
        bridge.embed_images([blank])
    assert raised.value.field == "images[0]"
