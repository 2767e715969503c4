"""The request path's shortcuts give the answers of the plain code they replaced: streamed bulk .npy
answers, the lean route's key check, one-pass checks and preprocessing, AS-norm statistics, decoding."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import Depends, params
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from facebridge.api.lean import declared_scopes
from facebridge.api.translate import STREAM_BLOCK_ROWS, STREAM_MIN_ROWS
from facebridge.bridge import Bridge
from facebridge.cohort.asnorm import MIN_STD, scoring_layout, top_k_for, top_k_stats, top_k_stats_of_sides
from facebridge.config import Settings
from facebridge.exceptions import NonFinite, ZeroVector
from facebridge.service.app import create_app
from facebridge.service.security import needs
from facebridge.vectors import check_matrix
from facebridge.vision.images import decode_image
from facebridge.vision.recognizer import Recognizer
from tests.factories import unit_rows

from .factories import synthetic_bank_settings

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return synthetic_bank_settings(tmp_path_factory.mktemp("request-path"))


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        assert client.app.state.service.ready.wait(30)  # type: ignore[attr-defined]
        yield client


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("target", ["net-b", "net-c"])  # a direct map and a chain of two
def test_streamed_bulk_answer_is_the_library_translation(
    client: TestClient, settings: Settings, target: str
) -> None:
    rows = np.random.default_rng(3).normal(size=(STREAM_MIN_ROWS + 2 * STREAM_BLOCK_ROWS + 123, 8))
    rows = rows.astype(np.float32)
    answer = client.post(
        f"/translate?source=net-a&target={target}",
        content=_npy(rows),
        headers={"content-type": "application/x-npy"},
    )
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-npy"
    assert int(answer.headers["content-length"]) == len(answer.content)
    got = np.load(io.BytesIO(answer.content))
    library = Bridge.from_defaults(settings=settings, load_models=False).translate(rows, "net-a", target)
    assert got.shape == library.embeddings.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, library.embeddings, atol=1e-6)


def test_lean_routes_take_only_key_scopes() -> None:
    assert declared_scopes([needs(), needs("translate"), needs("verify", "translate")], "/x") == [
        "translate",
        "verify",
    ]
    with pytest.raises(TypeError, match="LeanRoute serves only needs"):
        declared_scopes([Depends(lambda: None)], "/x")
    assert isinstance(needs("translate"), params.Security)


def test_one_pass_matrix_check_names_the_same_rows() -> None:
    rows = np.random.default_rng(4).normal(size=(6, 4)).astype(np.float32)
    bad = rows.copy()
    bad[4, 1], bad[2, 3] = np.inf, np.nan
    with pytest.raises(NonFinite, match=r"body\[2\]"):
        check_matrix(bad, "body", 4, 10)
    zero = rows.copy()
    zero[5] = 0
    with pytest.raises(ZeroVector, match=r"body\[5\]"):
        check_matrix(zero, "body", 4, 10)
    huge = rows.copy()
    huge[1] = 1e30  # finite, though its sum of squares overflows float32: accepted, as before
    assert check_matrix(huge, "body", 4, 10) is huge


def test_as_norm_statistics_are_numpys_mean_and_std() -> None:
    rng = np.random.default_rng(5)
    cohort = rng.normal(size=(300, 16)).astype(np.float32)
    for n, k in [(1, 100), (7, 100), (4, 500)]:
        templates = rng.normal(size=(n, 16)).astype(np.float32)
        scores = templates @ cohort.T
        k = min(k, scores.shape[1])
        top = np.partition(scores, scores.shape[1] - k, axis=1)[:, -k:] if k < scores.shape[1] else scores
        stats = top_k_stats(templates, cohort, k)
        np.testing.assert_array_equal(stats.mean, top.mean(axis=1, dtype=np.float64).astype(np.float32))
        expected_std = np.maximum(top.std(axis=1, dtype=np.float64), MIN_STD).astype(np.float32)
        np.testing.assert_array_equal(stats.std, expected_std)


def test_a_cohort_in_scoring_layout_gives_the_same_statistics() -> None:
    """The service keeps its cohorts column by column (faster to stream cold); same rows, same stats up
    to the last bit of a score."""
    rng = np.random.default_rng(8)
    cohort = unit_rows(1000, 320, rng)
    laid = scoring_layout(cohort)
    assert laid.flags.f_contiguous and not laid.flags.c_contiguous
    np.testing.assert_array_equal(laid, cohort)
    a, b = unit_rows(1, 320, rng), unit_rows(3, 320, rng)
    for got, expected in zip(
        top_k_stats_of_sides(a, laid, b, laid, 100, 0.05),
        top_k_stats_of_sides(a, cohort, b, cohort, 100, 0.05),
        strict=True,
    ):
        np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-6)
        np.testing.assert_allclose(got.std, expected.std, rtol=1e-4)


def test_top_k_is_a_share_of_the_cohort_within_bounds() -> None:
    """5% of the cohort, at least 10 and at most 100, never more than the cohort; fixed without a share."""
    cases = {40: 10, 200: 10, 305: 15, 1000: 50, 2000: 100, 5000: 100}
    for size, k in cases.items():
        assert top_k_for(size, 100, 0.05) == k
    assert top_k_for(6, 100, 0.05) == 6
    assert top_k_for(305, 100, None) == 100 and top_k_for(50, 100, None) == 50
    rng = np.random.default_rng(7)
    cohort = rng.normal(size=(305, 16)).astype(np.float32)
    templates = rng.normal(size=(3, 16)).astype(np.float32)
    top = np.sort(templates @ cohort.T, axis=1)[:, -15:]
    stats = top_k_stats(templates, cohort, 100, 0.05)
    np.testing.assert_allclose(stats.mean, top.mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("color", ["RGB", "BGR"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(("mean", "std"), [(0.0, 1.0), (127.5, 128.0), (127.5, 127.5), (123.3, 57.1)])
def test_preprocessing_is_the_reference_formula_bit_for_bit(
    color: str, layout: str, mean: float, std: float
) -> None:
    rng = np.random.default_rng(6)
    recognizer = SimpleNamespace(
        entry=SimpleNamespace(color=color, layout=layout, mean=mean, std=std), size=12, model_id="x"
    )
    for crops in (
        [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(3)],
        [rng.random((12, 12, 3)) * 255 for _ in range(2)],  # float64 crops: converted first
    ):
        reference = np.stack(crops).astype(np.float32)
        if color == "RGB":
            reference = reference[..., ::-1]
        reference = (reference - mean) / std
        if layout == "NCHW":
            reference = reference.transpose(0, 3, 1, 2)
        reference = np.ascontiguousarray(reference, dtype=np.float32)
        tensor = Recognizer.preprocess(recognizer, crops)  # type: ignore[arg-type]
        assert tensor.flags.c_contiguous and tensor.dtype == np.float32
        np.testing.assert_array_equal(tensor.view(np.uint32), reference.view(np.uint32))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_decoding_gives_pillows_bgr_pixels(tmp_path: Path, orientation: int, mode: str) -> None:
    pixels = np.random.default_rng(7).integers(0, 256, (20, 14, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    data = buffer.getvalue()
    opened = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    reference = np.ascontiguousarray(np.asarray(opened.convert("RGB"))[..., ::-1])
    decoded = decode_image(data, 1 << 20, 1 << 20)
    assert decoded.flags.writeable and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, reference)
