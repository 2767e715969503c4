"""Polytope hub: exact vertex geometry, exact recovery on synthetic data, and a real LFW bridge."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.hub import hub_markdown, photo_sides, study_hub
from facebridge.evaluation.interchange import native_scores, paired_lfw, summarise
from facebridge.evaluation.sections import sections_of, upsert_section
from facebridge.mapping.polytope import HubMap, PolytopeHub, polytope_dimension, polytope_vertices
from tests.conftest import subset_pairs


@pytest.mark.parametrize("k", [2, 3, 7, 64, 101])
def test_simplex_vertices_are_equidistant_and_maximally_separated(k: int) -> None:
    v = polytope_vertices("simplex", k)
    assert v.shape == (k, k - 1)
    gram = v @ v.T
    np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-12)
    off = gram[~np.eye(k, dtype=bool)]
    np.testing.assert_allclose(off, -1.0 / (k - 1), atol=1e-12)
    np.testing.assert_allclose(v.sum(axis=0), 0.0, atol=1e-10)


@pytest.mark.parametrize("k", [2, 5, 64])
def test_orthoplex_vertices_are_orthogonal_or_opposite(k: int) -> None:
    v = polytope_vertices("orthoplex", k)
    assert v.shape == (k, math.ceil(k / 2))
    off = (v @ v.T)[~np.eye(k, dtype=bool)]
    assert set(np.round(off, 12)) <= {0.0, -1.0}


@pytest.mark.parametrize("k", [2, 5, 64, 100])
def test_cube_vertices_are_distinct_sign_patterns(k: int) -> None:
    v = polytope_vertices("cube", k)
    d = polytope_dimension("cube", k)
    assert v.shape == (k, d) and 2 ** (d - 1) < k <= 2**d
    np.testing.assert_allclose(np.abs(v), 1 / math.sqrt(d))
    assert len({tuple(row) for row in np.sign(v)}) == k
    nearest = np.sort((v @ v.T)[~np.eye(k, dtype=bool)])[-1]
    assert nearest == pytest.approx(1 - 2 / d)


def test_unknown_polytope_and_unknown_identity_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown polytope"):
        polytope_vertices("dodecahedron", 5)
    hub = PolytopeHub("simplex").fit(np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="no vertex"):
        hub.targets(np.array(["a", "zed"]))


def test_hub_maps_of_two_models_meet_at_the_vertices_from_different_photos() -> None:
    """Two 'models' are different affine images of identity codes plus photo noise; each hub map is
    fitted on its own photos, yet both land on the same vertex for the same person."""
    rng = np.random.default_rng(0)
    people, dim = 40, 24
    codes = rng.normal(size=(people, dim))
    identities = np.repeat([f"p{i:02d}" for i in range(people)], 6)
    latent = codes[np.repeat(np.arange(people), 6)] + 0.05 * rng.normal(size=(len(identities), dim))
    a = latent @ rng.normal(size=(dim, 32)) + 1.0
    b = latent @ rng.normal(size=(dim, 48)) - 2.0
    side = photo_sides(identities)
    hub = PolytopeHub("simplex").fit(identities)
    to_hub_a = HubMap(hub, alphas=(1e-6,)).fit(a[side == 0], identities[side == 0])
    to_hub_b = HubMap(hub, alphas=(1e-6,)).fit(b[side == 1], identities[side == 1])
    za, zb = to_hub_a.transform(a[side == 1]), to_hub_b.transform(b[side == 0])
    # the people are linearly separable in the latent codes, so the nearest vertex is the person's own
    assert (
        np.mean(
            np.argmax(za @ hub.vertices_.T, axis=1) == np.searchsorted(hub.classes_, identities[side == 1])
        )
        == 1
    )
    assert (
        np.mean(
            np.argmax(zb @ hub.vertices_.T, axis=1) == np.searchsorted(hub.classes_, identities[side == 0])
        )
        == 1
    )


def test_photo_sides_never_share_a_photo_and_split_every_repeated_person() -> None:
    identities = np.array(["a", "a", "b", "c", "c", "c", "d", "e"])
    side = photo_sides(identities)
    assert set(side) == {0, 1}
    for name in ("a", "c"):
        assert set(side[identities == name]) == {0, 1}


def test_real_hub_bridge_on_an_lfw_subset(subset_caches: dict[str, EmbeddingCache], tmp_path: Path) -> None:
    a, b, c = (subset_caches[m] for m in ("arcface-mbf128", "sirius-mbf192", "faceplugin-mbf512"))
    pairs = subset_pairs(a)
    data, via = paired_lfw(a, b, pairs), paired_lfw(a, c, pairs)
    study = study_hub(data, via, ("simplex", "cube"), log=lambda _: None)
    accuracy = {(row.name, row.photos): row.metrics.accuracy for row in study.rows}
    assert accuracy[("direct A→B", "same")] > 0.9
    # the hub, fitted from labels on disjoint photos, bridges far above chance (0.5)
    assert accuracy[("simplex hub", "other")] > 0.8
    assert study.hub_dims["cube"] == math.ceil(math.log2(len(np.unique(data.identities[data.fit_rows(0)]))))
    natives = {
        m: summarise(native_scores(x, data), data.labels, data.folds)
        for m, x in (("arcface-mbf128", data.a), ("sirius-mbf192", data.b))
    }
    report = tmp_path / "report.md"
    report.write_text("# report\n\nbody\n")
    upsert_section(report, "polytope-hub", hub_markdown([study], natives, "facebridge evaluate-hub ..."))
    upsert_section(report, "polytope-hub", hub_markdown([study], natives, "again"))
    text = report.read_text()
    assert text.startswith("# report\n\nbody\n") and text.count("## Polytope hub space") == 1
    assert "again" in sections_of(text)["polytope-hub"]
