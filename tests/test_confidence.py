"""Per-template confidence: stored and verified with the map, served by the library, the service and the
migration alike, and predictive of real translation fidelity on people the map never saw."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file, save_file

from facebridge.bridge import Bridge
from facebridge.client import Client
from facebridge.embedding_cache import EmbeddingCache
from facebridge.mapping.bank import LoadedMap, MapPath, MappingBank
from facebridge.mapping.confidence import ConfidenceModel, rank_correlation
from facebridge.mapping.estimators import row_cosine
from facebridge.mapping.fitting import PairedEmbeddings, fit_map, pair_caches
from facebridge.mapping.mapfile import (
    CONFIDENCE_NAMES,
    METADATA_KEY,
    MapFileError,
    load_map,
    map_filename,
    save_map,
    tensor_digest,
)
from facebridge.migration.galleries import ParquetGallery
from facebridge.migration.job import migrate

from .conftest import API_KEYS, LiveServer

ARC, FP, SIR = "arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192"


@pytest.fixture(scope="module")
def fitted_file(subset_caches: dict[str, EmbeddingCache], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real arcface->sirius ridge map of the LFW subset, its predictor learned on held-out people."""
    fitted = fit_map(pair_caches(subset_caches[ARC], subset_caches[SIR], "lfw-subset"), "ridge")
    assert fitted.confidence is not None and fitted.meta.confidence is not None
    path = tmp_path_factory.mktemp("confidence") / map_filename(ARC, SIR)
    save_map(path, fitted.meta, fitted.weight, fitted.bias, None, fitted.confidence_tensors)
    return path


def test_predictor_round_trips_through_the_map_file(
    fitted_file: Path, subset_caches: dict[str, EmbeddingCache]
) -> None:
    fitted = fit_map(pair_caches(subset_caches[ARC], subset_caches[SIR], "lfw-subset"), "ridge")
    assert fitted.confidence is not None
    loaded = load_map(fitted_file)
    assert loaded.confidence is not None and loaded.meta.confidence == fitted.meta.confidence
    for name, array in fitted.confidence.tensors().named().items():
        np.testing.assert_array_equal(loaded.confidence.named()[name], array)
    assert loaded.meta.tensor_sha256 == tensor_digest(loaded.weight, loaded.bias, None, loaded.confidence)
    assert loaded.meta.tensor_sha256 != tensor_digest(loaded.weight, loaded.bias)  # the predictor is hashed
    x = subset_caches[ARC].embeddings
    expected = fitted.confidence.predict(x, fitted.estimator.transform(x))
    served = MappingBank.load(fitted_file.parent).maps[(ARC, SIR)]
    confidence = served.confidence(x)
    assert confidence is not None and confidence.dtype == np.float32 and confidence.shape == (len(x),)
    np.testing.assert_allclose(confidence, expected, atol=2e-5)
    # one application gives the same rows as `apply` and the same confidence as `confidence`
    rows, again = served.apply_with_confidence(x)
    np.testing.assert_array_equal(rows, served.apply(x))
    np.testing.assert_array_equal(again, confidence)
    # saved without the predictor, the file is an ordinary map again (digest and header as before)
    plain = save_map(fitted_file.with_name("plain.safetensors"), loaded.meta, loaded.weight, loaded.bias)
    assert plain.confidence is None and plain.tensor_sha256 == tensor_digest(loaded.weight, loaded.bias)
    assert load_map(fitted_file.with_name("plain.safetensors")).confidence is None
    fitted_file.with_name("plain.safetensors").unlink()


def _rewrite(target: Path, tensors: dict[str, np.ndarray], meta: dict[str, object]) -> None:
    save_file(tensors, str(target), metadata={METADATA_KEY: json.dumps(meta)})


def _parts(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    size = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + size])
    return dict(load_file(str(path))), dict(json.loads(header["__metadata__"][METADATA_KEY]))


def test_corrupted_confidence_tensors_are_refused_and_the_rest_keeps_loading(
    fitted_file: Path, tmp_path: Path
) -> None:
    tensors, meta = _parts(fitted_file)
    bad: dict[str, tuple[dict[str, np.ndarray], dict[str, object], str]] = {}
    edited = dict(tensors)
    edited["confidence.target_weight"] = edited["confidence.target_weight"] * np.float32(1.001)
    bad["tampered"] = (edited, meta, "tensor sha256")
    edited = dict(tensors)
    edited.pop("confidence.bias")
    bad["missing"] = (edited, meta, "confidence tensors come all four or none")
    edited = dict(tensors)
    edited["confidence.source_weight"] = np.zeros(192, np.float32)
    bad["shape"] = (edited, meta, "confidence shapes")
    edited = dict(tensors)
    edited["confidence.norm_weight"] = np.array([np.nan, 0], np.float32)
    bad["nan"] = (edited, meta, "confidence.norm_weight contains NaN")
    bad["no-metadata"] = (
        tensors,
        {k: v for k, v in meta.items() if k != "confidence"},
        "without their metadata",
    )
    bad["no-tensors"] = (
        {k: v for k, v in tensors.items() if k not in CONFIDENCE_NAMES},
        meta,
        "describes a confidence predictor but no tensors",
    )
    for name, (t, m, reason) in bad.items():
        folder = tmp_path / name
        folder.mkdir()
        _rewrite(folder / "map.safetensors", t, m)
        with pytest.raises(MapFileError, match=reason):
            load_map(folder / "map.safetensors")
    # a bank with one corrupted file refuses it and serves its good neighbour
    folder = tmp_path / "bank"
    folder.mkdir()
    (folder / fitted_file.name).write_bytes(fitted_file.read_bytes())
    edited = dict(tensors)
    edited["confidence.bias"] = edited["confidence.bias"] + np.float32(0.5)
    _rewrite(folder / "corrupted.safetensors", edited, meta)
    bank = MappingBank.load(folder)
    assert [r.file for r in bank.refused] == ["corrupted.safetensors"]
    assert "tensor sha256" in bank.refused[0].reason and bank.maps[(ARC, SIR)].has_confidence


def _bridge(maps_dir: Path) -> Bridge:
    return Bridge(MappingBank.load(maps_dir))


@pytest.mark.parametrize("target", [FP, SIR])  # direct, and a chain through faceplugin
def test_translate_json_and_npz_give_the_bridges_confidence(
    client: httpx.Client, maps_dir: Path, subset_caches: dict[str, EmbeddingCache], target: str
) -> None:
    x = subset_caches[ARC].embeddings[:300]
    library = _bridge(maps_dir).translate(x, ARC, target)
    assert library.confidence is not None and library.confidence.shape == (len(x),)
    answer = client.post("/translate", json={"source": ARC, "target": target, "embeddings": x.tolist()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    np.testing.assert_array_equal(np.asarray(body["confidence"], np.float32), library.confidence)
    buffer = io.BytesIO()
    np.save(buffer, x)
    bulk = client.post(
        f"/translate?source={ARC}&target={target}&confidence=true",
        content=buffer.getvalue(),
        headers={"content-type": "application/x-npy"},
    )
    assert bulk.status_code == 200 and bulk.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(bulk.content)) as npz:
        np.testing.assert_array_equal(npz["confidence"], library.confidence)
        np.testing.assert_array_equal(npz["embeddings"], library.embeddings)
    plain = client.post(
        f"/translate?source={ARC}&target={target}",
        content=buffer.getvalue(),
        headers={"content-type": "application/x-npy"},
    )
    assert plain.headers["content-type"] == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(plain.content)), library.embeddings)
    if target == SIR:  # a chain multiplies its hops' expected cosines, each read on what the hop receives
        path = _bridge(maps_dir).map_path(ARC, SIR)
        assert path.composed
        first, second = path.maps
        middle, c1 = first.apply_with_confidence(x)
        c2 = second.confidence(middle)
        assert c1 is not None and c2 is not None
        np.testing.assert_allclose(library.confidence, np.clip(c1, 0, 1) * np.clip(c2, 0, 1), rtol=1e-6)


def test_client_returns_the_confidence_on_both_wire_formats(
    server: LiveServer, maps_dir: Path, subset_caches: dict[str, EmbeddingCache]
) -> None:
    x = subset_caches[ARC].embeddings[:50]
    library = _bridge(maps_dir).translate(x, ARC, FP)
    with Client(server.url, API_KEYS[0]) as client:
        by_json = client.translate(x, ARC, FP, binary=False)
        by_npz = client.translate(x, ARC, FP, binary=True, confidence=True)
        by_npy = client.translate(x, ARC, FP, binary=True)
    assert by_npy.confidence is None
    for result in (by_json, by_npz):
        np.testing.assert_array_equal(result.confidence, library.confidence)
        np.testing.assert_array_equal(result.embeddings, library.embeddings)


def test_confidence_is_null_without_a_predictor_and_bulk_asks_are_refused(
    maps_dir: Path, subset_caches: dict[str, EmbeddingCache]
) -> None:
    bank = MappingBank.load(maps_dir)
    loaded = bank.maps[(ARC, FP)]
    bare = LoadedMap(loaded.meta, loaded.weight, loaded.bias, loaded.file)
    x = subset_caches[ARC].embeddings[:20]
    assert bare.confidence(x) is None and MapPath((bare,)).confidence(x) is None
    assert MapPath((bare, bank.maps[(FP, SIR)])).apply_with_confidence(x)[1] is None
    bank.maps[(ARC, FP)] = bare
    translation = Bridge(bank).translate(x, ARC, FP)
    assert translation.confidence is None and translation.to_response().confidence is None


def test_bulk_confidence_query_is_validated(client: httpx.Client) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ones((2, 128), np.float32))
    answer = client.post(
        f"/translate?source={ARC}&target={FP}&confidence=maybe",
        content=buffer.getvalue(),
        headers={"content-type": "application/x-npy"},
    )
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "confidence"


def test_migrate_writes_the_bridges_confidence(
    tmp_path: Path, maps_dir: Path, subset_caches: dict[str, EmbeddingCache]
) -> None:
    x = subset_caches[ARC].embeddings
    source = tmp_path / "gallery.parquet"
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    pq.write_table(pa.table({"id": np.arange(len(x)), "embedding": column}), source, row_group_size=300)
    bridge = _bridge(maps_dir)
    path = bridge.map_path(ARC, FP)
    migrate(ParquetGallery(source), source, path, tmp_path / "out", chunk_rows=400, progress=False)
    table = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet")))
    assert table.column_names == ["id", "embedding", "confidence"]
    assert table.schema.field("confidence").type == pa.float32()
    library = bridge.translate(x, ARC, FP)
    assert library.confidence is not None
    np.testing.assert_allclose(table.column("confidence").to_numpy(), library.confidence, atol=1e-6)
    manifest = json.loads((tmp_path / "out" / "_facebridge_migration.json").read_text())
    assert manifest["confidence_column"] is True and manifest["state"] == "complete"


def test_confidence_predicts_fidelity_on_people_the_map_never_saw(
    subset_caches: dict[str, EmbeddingCache],
) -> None:
    """Map and predictor learned on half of the subset's people; on the other half, templates the
    predictor ranks higher really are translated closer to the target model's own embedding."""
    data = pair_caches(subset_caches[ARC], subset_caches[SIR], "lfw-subset")
    names = np.unique(data.identities)
    half = set(np.random.default_rng(1).permutation(names)[: len(names) // 2].tolist())
    in_a = np.array([i in half for i in data.identities.tolist()])
    fitted = fit_map(
        PairedEmbeddings(
            data.source[in_a],
            data.target[in_a],
            data.identities[in_a],
            data.source_space,
            data.target_space,
            "lfw-subset half A",
        ),
        "ridge",
        heldout_fraction=0.4,
    )
    assert fitted.confidence is not None
    x, y = data.source[~in_a], data.target[~in_a]
    raw = fitted.estimator.transform(x)
    actual = row_cosine(raw, y)
    predicted = fitted.confidence.predict(x, raw)
    assert rank_correlation(predicted, actual) > 0.3, rank_correlation(predicted, actual)
    # and the least confident tenth is worse translated than the rest
    low = np.argsort(predicted)[: len(x) // 10]
    assert actual[low].mean() < actual.mean() - 0.02


def test_confidence_model_is_a_plain_estimator() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    raw = x @ rng.normal(size=(6, 4)) * rng.uniform(0.3, 1.5, size=(400, 1))
    actual = np.tanh(np.linalg.norm(raw, axis=1))  # fidelity that grows with the raw norm
    model = ConfidenceModel(alphas=(1e-3,)).fit(x, raw, actual, rng.integers(0, 80, 400))
    assert model.get_params() == {"alphas": [1e-3], "cv": 5, "random_state": 0}
    predicted = model.predict(x, raw)
    assert predicted.min() >= -1 and predicted.max() <= 1 and rank_correlation(predicted, actual) > 0.9
    with pytest.raises(ValueError, match="at least"):
        ConfidenceModel().fit(x[:10], raw[:10], actual[:10])
