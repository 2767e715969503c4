"""The maps committed in mappings/ load cleanly, pin the manifest's weights and do what they record."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from app.embedding_cache import EmbeddingCache
from app.mapping.bank import MappingBank
from app.vision.manifest import load_manifest

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
    from app.mapping.calibration import genuine_impostor_scores
    from app.mapping.fitting import balanced_accuracy_pairs

    for source, target in itertools.permutations(subset_caches, 2):
        loaded = shipped.maps[(source, target)]
        mapped = loaded.apply(subset_caches[source].embeddings)
        identities = subset_caches[source].identities
        genuine, impostor = genuine_impostor_scores(mapped, subset_caches[target].embeddings, identities)
        accuracy = balanced_accuracy_pairs(genuine, impostor, seed=0)
        recorded = loaded.meta.quality.accuracy_cross
        assert recorded is not None and accuracy >= recorded - 0.02, (loaded.id, accuracy, recorded)
