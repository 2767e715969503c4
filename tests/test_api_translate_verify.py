"""POST /translate, POST /verify and GET /mappings over a real uvicorn server with real fitted maps."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest

from facebridge.embedding_cache import EmbeddingCache
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.compare import plan_comparison
from facebridge.vision.manifest import load_manifest

from .conftest import MODELS_DIR
from .problems import assert_problem

ARC, FP, SIR = "arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192"


@pytest.fixture(scope="module")
def bank(maps_dir: Path) -> MappingBank:
    return MappingBank.load(maps_dir, load_manifest(MODELS_DIR / "manifest.toml"))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_mappings_and_models_listing(client: httpx.Client) -> None:
    listing = client.get("/mappings").json()
    assert {m["id"] for m in listing["maps"]} == {f"{ARC}->{FP}", f"{FP}->{SIR}"}
    meta = next(m for m in listing["maps"] if m["id"] == f"{ARC}->{FP}")["metadata"]
    assert meta["source"]["sha256"].startswith("190aabc5") and meta["method"] == "ridge"
    assert meta["quality"]["accuracy_cross"] > 0.9 and meta["provenance"]["heldout_identities"] == 62
    assert set(meta["calibration"]["cross"]["thresholds"]) == {
        "far_1e-2",
        "far_1e-3",
        "far_1e-4",
        "max_accuracy",
    }
    assert {s["space"]["model"] for s in listing["space_calibrations"]} == {ARC, FP}
    assert listing["refused"] == []
    models = {m["id"]: m for m in client.get("/models").json()["models"]}
    assert models[ARC]["maps_from"] == [FP] and models[ARC]["space_calibrated"] is True


def test_translate_json_thousand_embeddings(
    client: httpx.Client, bank: MappingBank, subset_caches: dict[str, EmbeddingCache]
) -> None:
    source = subset_caches[ARC].embeddings[:1000]
    response = client.post("/translate", json={"source": ARC, "target": FP, "embeddings": source.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    translated = np.array(body["embeddings"])
    assert translated.shape == (len(source), 512) and body["composed"] is False
    np.testing.assert_allclose(translated, bank.maps[(ARC, FP)].apply(source), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(translated, axis=1), 1.0, atol=1e-5)
    assert body["maps"][0]["id"] == f"{ARC}->{FP}" and body["maps"][0]["mean_cosine"] > 0.6
    # translated templates land near the target model's own embeddings of the same images
    target = subset_caches[FP].embeddings[: len(source)]
    assert np.einsum("ij,ij->i", translated, target).mean() > 0.6


def test_translate_binary_and_composition(
    client: httpx.Client, bank: MappingBank, subset_caches: dict[str, EmbeddingCache]
) -> None:
    source = subset_caches[ARC].embeddings[:300].astype(np.float32)
    response = client.post(
        f"/translate?source={ARC}&target={SIR}",
        content=_npy(source),
        headers={"content-type": "application/x-npy"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npy"
    assert response.headers["x-facebridge-maps"] == f"{ARC}->{FP},{FP}->{SIR}"
    assert response.headers["x-facebridge-composed"] == "true"
    out = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert out.dtype == np.float32 and out.shape == (300, 192)
    path = bank.find_path(ARC, SIR)
    assert path is not None
    np.testing.assert_allclose(out, path.apply(source), atol=1e-6)
    # float64 input is accepted and converted
    again = client.post(
        f"/translate?source={ARC}&target={FP}",
        content=_npy(source[:5].astype(np.float64)),
        headers={"content-type": "application/x-npy"},
    )
    assert again.status_code == 200 and np.load(io.BytesIO(again.content)).shape == (5, 512)


def test_verify_embeddings_images_and_same_space(
    client: httpx.Client, bank: MappingBank, lfw: Path, subset_caches: dict[str, EmbeddingCache]
) -> None:
    arc, fp = subset_caches[ARC], subset_caches[FP]
    same_person = [i for i in range(1, len(arc)) if arc.identities[i] == arc.identities[i - 1]][:5]
    pairs = []
    for i in same_person:
        pairs.append(
            {
                "a": {"model": ARC, "embedding": arc.embeddings[i].tolist()},
                "b": {"model": FP, "embedding": fp.embeddings[i - 1].tolist()},
            }
        )  # same person
        pairs.append(
            {
                "a": {"model": ARC, "embedding": arc.embeddings[i].tolist()},
                "b": {"model": FP, "embedding": fp.embeddings[(i + 40) % len(fp)].tolist()},
            }
        )  # other person
    response = client.post("/verify", json={"pairs": pairs})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    plan = plan_comparison(bank, ARC, FP)
    expected_threshold = plan.calibration.thresholds["far_1e-3"].threshold  # type: ignore[union-attr]
    for result in results:
        assert result["comparison"] == "cross" and result["space"] == FP and result["translated"] == "a"
        assert result["operating_point"] == "far_1e-3" and result["threshold"] == pytest.approx(
            expected_threshold
        )
        assert result["calibrated"] is True and result["maps"] == [f"{ARC}->{FP}"]
        assert result["match"] == (result["score"] >= result["threshold"])
    genuine_matches = sum(r["match"] for r in results[0::2])
    assert genuine_matches >= 4 and not any(r["match"] for r in results[1::2])
    i = same_person[0]
    expected = float(bank.maps[(ARC, FP)].apply(arc.embeddings[i : i + 1])[0] @ fp.embeddings[i - 1])
    assert results[0]["score"] == pytest.approx(expected, abs=1e-5)

    # an image side is embedded by the service; same-model pairs use the space's own calibration
    photo = base64.b64encode((lfw / arc.paths[i - 1]).read_bytes()).decode()
    single = client.post(
        "/verify",
        json={
            "pair": {
                "a": {"model": ARC, "embedding": arc.embeddings[i].tolist()},
                "b": {"model": ARC, "image": photo},
            },
            "far": 0.0001,
        },
    ).json()
    result = single["results"][0]
    assert (
        result["comparison"] == "same-space" and result["operating_point"] == "far_1e-4" and result["match"]
    )
    assert result["threshold"] == pytest.approx(
        bank.space_calibrations[ARC].calibration.thresholds["far_1e-4"].threshold
    )
    custom = client.post(
        "/verify",
        json={
            "pair": {
                "a": {"model": FP, "image": photo},
                "b": {"model": ARC, "embedding": arc.embeddings[i].tolist()},
            },
            "threshold": 0.99,
        },
    ).json()["results"][0]
    assert custom["operating_point"] == "custom" and custom["threshold"] == 0.99 and custom["match"] is False
    assert custom["translated"] == "b" and custom["space"] == FP
    composed = client.post(
        "/verify",
        json={
            "pair": {
                "a": {"model": ARC, "embedding": arc.embeddings[i].tolist()},
                "b": {"model": SIR, "image": photo},
            }
        },
    ).json()["results"][0]
    assert composed["maps"] == [f"{ARC}->{FP}", f"{FP}->{SIR}"] and composed["calibrated"] is False


def test_translate_error_paths(client: httpx.Client) -> None:
    ok = [[0.1] * 128]
    post = lambda body: client.post("/translate", json=body)  # noqa: E731
    assert_problem(post({"source": "nope", "target": FP, "embeddings": ok}), 404, "unknown-model", "source")
    assert_problem(
        post({"source": ARC, "target": "dlib-r29-128", "embeddings": ok}), 409, "no-map-path", "target"
    )
    assert_problem(
        post({"source": ARC, "target": FP, "embeddings": [[0.1] * 128, [0.1] * 127]}),
        422,
        "wrong-dim",
        "embeddings[1]",
    )
    assert_problem(
        post({"source": ARC, "target": FP, "embeddings": [[0.1] * 64]}), 422, "wrong-dim", "embeddings[0]"
    )
    assert_problem(
        post({"source": ARC, "target": FP, "embeddings": [[0.1] * 128, [0.0] * 128]}),
        422,
        "zero-vector",
        "embeddings[1]",
    )
    assert_problem(
        post({"source": ARC, "target": FP, "embeddings": [[0.1] * 128, [1e39] * 128]}),
        422,
        "non-finite",
        "embeddings[1]",
    )
    # what the declared TranslateRequest schema says is checked by it: a generic validation-error
    assert_problem(
        post({"source": ARC, "target": FP, "embeddings": []}), 422, "validation-error", "embeddings"
    )
    assert_problem(
        post({"source": ARC, "target": FP, "embeddings": [[0.1] * 128] * 2001}),
        413,
        "batch-too-large",
        "embeddings",
    )
    assert_problem(
        post({"source": ARC, "target": FP, "embeddings": [[0.1] * 127 + ["x"]]}),
        422,
        "validation-error",
        "embeddings[0][127]",
    )
    assert_problem(post({"source": ARC, "target": FP, "embeddings": [0.1] * 128}), 422, "validation-error")
    assert_problem(post({"source": ARC, "target": ARC, "embeddings": ok}), 422, "same-space", "target")
    assert_problem(post({"source": ARC, "embeddings": ok}), 422, "validation-error", "target")
    assert_problem(
        post({"source": ARC, "target": FP, "embeddings": ok, "extra": 1}), 422, "validation-error", "extra"
    )
    assert_problem(
        client.post(
            "/translate",
            content=b'{"source": "a", "embeddings": [[NaN]]}',
            headers={"content-type": "application/json"},
        ),
        422,
        "validation-error",
    )
    nan = np.full((3, 128), 0.1, np.float32)
    nan[2, 5] = np.nan
    npy = {"content-type": "application/x-npy"}
    assert_problem(
        client.post(f"/translate?source={ARC}&target={FP}", content=_npy(nan), headers=npy),
        422,
        "non-finite",
        "body[2]",
    )
    assert_problem(
        client.post(f"/translate?source={ARC}&target={FP}", content=b"not npy", headers=npy),
        422,
        "invalid-npy",
    )
    assert_problem(
        client.post(f"/translate?source={ARC}&target={FP}", content=_npy(nan)[:-10], headers=npy),
        422,
        "invalid-npy",
    )
    assert_problem(
        client.post(
            f"/translate?source={ARC}&target={FP}", content=_npy(np.zeros((2, 128), np.int32)), headers=npy
        ),
        422,
        "invalid-npy",
    )
    assert_problem(
        client.post(f"/translate?source={ARC}", content=_npy(nan), headers=npy),
        422,
        "validation-error",
        "target",
    )
    assert_problem(
        client.post("/translate", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported-media-type",
    )


def test_verify_error_paths(client: httpx.Client, subset_caches: dict[str, EmbeddingCache]) -> None:
    vec = subset_caches[ARC].embeddings[0].tolist()
    side = {"model": ARC, "embedding": vec}
    post = lambda body: client.post("/verify", json=body)  # noqa: E731
    assert_problem(
        post({"pair": {"a": side, "b": {"model": "nope", "embedding": vec}}}),
        404,
        "unknown-model",
        "pairs[0].b.model",
    )
    assert_problem(
        post({"pair": {"a": side, "b": {"model": "dlib-r29-128", "embedding": vec}}}),
        409,
        "no-map-path",
        "pairs[0]",
    )
    assert_problem(
        post({"pairs": [{"a": side, "b": side}, {"a": side, "b": {"model": FP, "embedding": vec}}]}),
        422,
        "wrong-dim",
        "pairs[1].b.embedding[0]",
    )
    assert_problem(
        post({"pair": {"a": side, "b": {"model": ARC, "embedding": [0.0] * 128}}}),
        422,
        "zero-vector",
        "pairs[0].b.embedding[0]",
    )
    assert_problem(
        post({"pair": {"a": side, "b": {"model": ARC, "embedding": [1e39] * 128}}}),
        422,
        "non-finite",
        "pairs[0].b.embedding[0]",
    )
    assert_problem(post({"pairs": []}), 422, "validation-error", "pairs")
    assert_problem(post({"pairs": [{"a": side, "b": side}] * 101}), 413, "batch-too-large", "pairs")
    assert_problem(post({"pair": {"a": side, "b": side}, "far": 0.5}), 422, "validation-error")
    assert_problem(
        post({"pair": {"a": side, "b": side}, "far": 0.001, "threshold": 0.3}), 422, "validation-error"
    )
    assert_problem(post({"pair": {"a": side, "b": {"model": ARC}}}), 422, "validation-error", "pair.b")
    assert_problem(
        post({"pair": {"a": side, "b": {"model": ARC, "embedding": ["x"] * 128}}}),
        422,
        "validation-error",
        "pair.b.embedding[0]",
    )
    assert_problem(
        post(
            {
                "pair": {
                    "a": {"model": SIR, "embedding": [0.1] * 192},
                    "b": {"model": SIR, "embedding": [0.2] * 192},
                }
            }
        ),
        409,
        "not-calibrated",
        "pairs[0]",
    )
    assert_problem(
        post({"pair": {"a": side, "b": {"model": ARC, "image": "@@@"}}}),
        422,
        "invalid-base64",
        "pairs[0].b.image",
    )
    assert_problem(
        post({"pair": {"a": side, "b": {"model": FP, "embedding": [0.1] * 512}}, "space": "nope"}),
        404,
        "unknown-model",
        "space",
    )


def test_verify_states_interval_and_calibration_data(
    client: httpx.Client, bank: MappingBank, subset_caches: dict[str, EmbeddingCache]
) -> None:
    """Every calibrated answer says how sure its FAR is and which data it was measured on."""
    arc, fp = subset_caches[ARC], subset_caches[FP]
    arc_side = {"model": ARC, "embedding": arc.embeddings[0].tolist()}
    pairs = [
        {"a": arc_side, "b": {"model": ARC, "embedding": arc.embeddings[1].tolist()}},
        {"a": arc_side, "b": {"model": FP, "embedding": fp.embeddings[1].tolist()}},
    ]
    response = client.post("/verify", json={"pairs": pairs, "operating_point": "far_1e-2"})
    assert response.status_code == 200, response.text
    same, cross = response.json()["results"]
    assert same["comparison"] == "same-space" and cross["comparison"] == "cross"
    space_calibration = bank.space_calibrations[ARC]
    cross_calibration = plan_comparison(bank, ARC, FP).calibration
    assert cross_calibration is not None
    for result, calibration in [(same, space_calibration.calibration), (cross, cross_calibration)]:
        point = calibration.thresholds["far_1e-2"]
        assert result["far_interval"] == pytest.approx(list(point.far_interval or ()))
        low, high = result["far_interval"]
        assert low <= result["far_at_threshold"] <= high
        assert result["far_range"] is None and result["far_range_note"] is None
        data = result["calibration_data"]
        assert data["dataset"] == "lfw-subset" and data["method"] == calibration.method
        assert data["genuine_pairs"] == calibration.genuine_pairs > 0
        assert data["impostor_pairs"] == calibration.impostor_pairs > 0
    assert same["calibration_data"]["images"] == space_calibration.images
    assert same["calibration_data"]["identities"] == space_calibration.identities
    provenance = bank.maps[(ARC, FP)].meta.provenance
    assert cross["calibration_data"]["images"] == provenance.heldout_images
    assert cross["calibration_data"]["identities"] == provenance.heldout_identities

    raw = client.post("/verify", json={"pair": pairs[1], "threshold": 0.3}).json()["results"][0]
    assert raw["operating_point"] == "custom"
    assert raw["far_interval"] is None and raw["far_range"] is None and raw["calibration_data"] is None

    # GET /mappings shows the same fields through the models
    listing = client.get("/mappings").json()
    cross_listed = next(m for m in listing["maps"] if m["id"] == f"{ARC}->{FP}")["metadata"]["calibration"]
    assert cross_listed["cross"]["dataset"] == "lfw-subset"
    assert cross_listed["cross"]["thresholds"]["far_1e-2"]["interval"] == "clopper-pearson 95%"
    assert len(cross_listed["cross"]["thresholds"]["far_1e-2"]["far_interval"]) == 2
    space_listed = next(s for s in listing["space_calibrations"] if s["space"]["model"] == ARC)
    assert space_listed["calibration"]["images"] == space_calibration.images
