"""The maps committed in mappings/ load cleanly, pin the manifest's weights and do what they record."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.evaluation_files import evaluation_path, load_evaluation
from facebridge.mapping.bank import MappingBank
from facebridge.vision.manifest import load_manifest

from .conftest import MODELS_DIR, RECOGNIZERS, ROOT


@pytest.fixture(scope="module")
def shipped() -> MappingBank:
    return MappingBank.load(ROOT / "mappings", load_manifest(MODELS_DIR / "manifest.toml"))


def test_every_ordered_pair_has_a_verified_map(shipped: MappingBank) -> None:
    assert shipped.refused == []
    assert set(shipped.maps) == set(itertools.permutations(RECOGNIZERS, 2))
    assert set(shipped.space_calibrations) == set(RECOGNIZERS)
    manifest = load_manifest(MODELS_DIR / "manifest.toml")
    for (source, target), loaded in shipped.maps.items():
        assert loaded.meta.source.sha256 == manifest.get(source).sha256  # type: ignore[union-attr]
        assert loaded.meta.target.sha256 == manifest.get(target).sha256  # type: ignore[union-attr]
        assert loaded.meta.calibration is not None and loaded.meta.provenance.heldout_identities > 100
        # reverse maps are fitted, not transposed
        reverse = shipped.maps[(target, source)]
        assert not np.allclose(reverse.weight, loaded.weight.T, atol=1e-3)


def test_every_shipped_map_has_a_current_evaluation_for_the_console(shipped: MappingBank) -> None:
    """The console draws a map's DET curves and histograms from its evaluation file: one per map,
    measured with the very tensors that ship (a refit without a new evaluation fails here)."""
    for (source, target), loaded in shipped.maps.items():
        path = evaluation_path(ROOT / "mappings", source, target)
        assert path.is_file(), f"{path.name} missing: run scripts/map_evaluations.py"
        evaluation = load_evaluation(path)
        assert evaluation.tensor_sha256 == loaded.meta.tensor_sha256, f"{path.name} is of other tensors"
        assert evaluation.populations, path.name


def test_shipped_maps_carry_fresh_embeddings_close_to_the_target(
    shipped: MappingBank, subset_caches: dict[str, EmbeddingCache]
) -> None:
    """On photos embedded now by this pipeline, mapped embeddings agree with the target's own."""
    for source, target in itertools.permutations(subset_caches, 2):
        loaded = shipped.maps[(source, target)]
        mapped = loaded.apply(subset_caches[source].embeddings)
        cosine = np.einsum("ij,ij->i", mapped, subset_caches[target].embeddings).mean()
        # the subset overlaps the fitting photos, so it must reach at least the held-out figure (minus noise)
        assert loaded.meta.quality.mean_cosine is not None
        assert cosine >= loaded.meta.quality.mean_cosine - 0.03, (loaded.id, cosine)


def test_shipped_maps_reproduce_their_recorded_verification_accuracy(
    shipped: MappingBank, subset_caches: dict[str, EmbeddingCache]
) -> None:
    """Cross accuracy (mapped source photo vs native target photo) on a check set of real LFW photos
    embedded now reaches what the map file records for its held-out identities."""
    from facebridge.mapping.calibration import genuine_impostor_scores
    from facebridge.mapping.fitting import balanced_accuracy_pairs

    for source, target in itertools.permutations(subset_caches, 2):
        loaded = shipped.maps[(source, target)]
        mapped = loaded.apply(subset_caches[source].embeddings)
        identities = subset_caches[source].identities
        genuine, impostor = genuine_impostor_scores(mapped, subset_caches[target].embeddings, identities)
        accuracy = balanced_accuracy_pairs(genuine, impostor, seed=0)
        recorded = loaded.meta.quality.accuracy_cross
        assert recorded is not None and accuracy >= recorded - 0.02, (loaded.id, accuracy, recorded)


@pytest.mark.parametrize("model_id", ["arcface-mbf128", "sirius-mbf192"])
def test_shipped_full_network_statistics_pin_the_weights_and_fit_the_graph(model_id: str) -> None:
    """mappings/full-network/*.npz (facebridge fit-full-network on LFW) load for the manifest's weights
    only, and have one mean and scale per layer feature the graph gives."""
    from facebridge.vision.full_network import FullNetworkEmbedding, stats_path
    from facebridge.vision.layer_features import LayerFeatureExtractor

    entry = load_manifest(MODELS_DIR / "manifest.toml").get(model_id)
    assert entry is not None and entry.sha256 is not None
    fne, meta = FullNetworkEmbedding.load(stats_path(ROOT / "mappings", model_id), entry.sha256)
    assert (meta["low"], meta["high"]) == (-0.25, 0.15)
    assert sum(layer["channels"] for layer in meta["layers"]) == fne.n_features_in_
    extractor = LayerFeatureExtractor(MODELS_DIR / entry.file)
    size = entry.size or 112
    shape = (1, 3, size, size) if entry.layout == "NCHW" else (1, size, size, 3)
    features = extractor(np.zeros(shape, np.float32))
    assert features.shape[1] == fne.n_features_in_
    assert np.isfinite(fne.mean_).all() and (fne.scale_ > 0).all()
    with pytest.raises(ValueError, match="fitted on weights"):
        FullNetworkEmbedding.load(stats_path(ROOT / "mappings", model_id), "0" * 64)
