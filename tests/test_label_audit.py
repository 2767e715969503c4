"""The label audit on real photos: celeba-dev's two folders of one actress are merged, nobody else is.

id_7392 and id_7393 hold photos of the same person under two CelebA identity numbers; four other
celeba-dev people (two of them women of similar age and style) and LFW's Olsen twins stand beside them.
The real models embed them and the shipped native thresholds at FAR 1e-4 judge the pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facebridge.dataset_embedding import embed_dataset
from facebridge.evaluation.label_audit import (
    IdentityMerge,
    duplicate_identities,
    merge_identities,
    native_thresholds,
)
from facebridge.evaluation.population import Population, load_population
from facebridge.mapping.bank import MappingBank
from facebridge.vision.pipeline import FacePipeline
from tests.conftest import LFW, ROOT, SHARED

CELEBA = SHARED / "datasets" / "celeba-dev"
MODELS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192"]
SAME_ACTRESS = ("id_7392", "id_7393")
OTHERS = ("id_7433", "id_7450", "id_7202", "id_7245")
TWINS = ("Ashley_Olsen", "Mary-Kate_Olsen")  # one photo and three


def _link(dest: Path, source: Path, people: tuple[str, ...], per_person: int) -> None:
    for person in people:
        (dest / person).mkdir(parents=True)
        for photo in sorted((source / person).glob("*.jpg"))[:per_person]:
            (dest / person / photo.name).symlink_to(photo)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, pipeline: FacePipeline) -> Path:
    if not CELEBA.exists():
        pytest.exit(f"CelebA development set not found at {CELEBA}", returncode=2)
    base = tmp_path_factory.mktemp("audit")
    _link(base / "people", CELEBA, SAME_ACTRESS + OTHERS, per_person=8)
    _link(base / "people", LFW, TWINS, per_person=8)
    embed_dataset(pipeline, base / "people", "audit", MODELS, base / "cache", progress=False)
    return base / "cache"


@pytest.fixture(scope="module")
def thresholds() -> dict[str, float]:
    return native_thresholds(MappingBank.load(ROOT / "mappings"), MODELS)


def test_one_person_under_two_labels_is_merged_and_nobody_else(
    cache: Path, thresholds: dict[str, float]
) -> None:
    population = load_population(cache, "audit", MODELS)
    merges = duplicate_identities(population, thresholds)
    assert [(m.kept, m.merged) for m in merges] == [SAME_ACTRESS]
    (merge,) = merges
    counts = {p: int(np.sum(population.identities == p)) for p in SAME_ACTRESS}
    assert merge.photo_pairs == counts["id_7392"] * counts["id_7393"]
    assert merge.share >= 0.5
    merged = merge_identities(population, merges)
    assert set(np.unique(merged.identities)) == set(np.unique(population.identities)) - {"id_7393"}
    assert np.sum(merged.identities == "id_7392") == sum(counts.values())
    assert merged.paths is population.paths and merged.clean is population.clean


def test_twins_and_small_folders_are_left_as_labelled(cache: Path, thresholds: dict[str, float]) -> None:
    """Every model accepts most of the twins' pairs, yet they are two people: with one photo on a side
    the evidence is about a photo, not a person, and the audit leaves them apart; without the
    minimum folder size the same scores would merge them."""
    population = load_population(cache, "audit", MODELS)
    twins = population.subset(np.isin(population.identities, TWINS))
    assert len(np.unique(twins.identities)) == 2
    assert duplicate_identities(twins, thresholds) == []
    without_minimum = duplicate_identities(twins, thresholds, min_photos=1)
    assert [(m.kept, m.merged) for m in without_minimum] == [TWINS]


@pytest.mark.fast
def test_chains_of_labels_become_one() -> None:
    population = Population(
        "chain", np.array(["a/1", "b/1", "c/1", "d/1"]), np.array(["a", "b", "c", "d"]), {}
    )
    merges = [IdentityMerge("a", "b", 1, 1), IdentityMerge("b", "c", 1, 1)]
    assert merge_identities(population, merges).identities.tolist() == ["a", "a", "a", "d"]
