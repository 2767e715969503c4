"""The out-of-population protocol on real photos: LFW people as one population, CelebA people as the other.

Small folders of real photos are embedded by the real models (clean and augmented) into a temporary
cache; the protocol's vectorised pair scoring and metrics are checked against plain loops, the
augmentations against themselves, and the guard that keeps a population away from its own maps.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from facebridge.dataset_embedding import dataset_cache_path, embed_dataset
from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.metrics import roc_curve, tar_at_far
from facebridge.evaluation.population import (
    PairSample,
    balanced_accuracy,
    fitting_rows,
    load_population,
    measure,
    pair_scores,
    tar_at,
    verification_pairs,
)
from facebridge.evaluation.population_study import check_disjoint, fit_estimator, mapped, study_direction
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.bank_fit import BankRecipe, fit_bank_map, merge
from facebridge.mapping.mapfile import ResidualTensors, SpaceRef, map_filename, save_map
from facebridge.mapping.residual import ResidualMLPMap
from facebridge.vision.augment import AUGMENTATIONS, augment
from facebridge.vision.pipeline import FacePipeline
from tests.conftest import LFW, SHARED

CELEBA = SHARED / "datasets" / "celeba-dev"
MODELS = ["arcface-mbf128", "dlib-r29-128"]


def _link_people(source: Path, dest: Path, people: int, per_person: int) -> Path:
    """A dataset folder of `people` identities with `per_person` photos each (symlinks to the real ones)."""
    dest.mkdir(parents=True)
    chosen = [d for d in sorted(source.iterdir()) if d.is_dir() and len(list(d.glob("*.jpg"))) >= per_person]
    for person in chosen[:people]:
        (dest / person.name).mkdir()
        for photo in sorted(person.glob("*.jpg"))[:per_person]:
            (dest / person.name / photo.name).symlink_to(photo)
    return dest


@pytest.fixture(scope="module")
def populations(tmp_path_factory: pytest.TempPathFactory, pipeline: FacePipeline) -> Path:
    """Two tiny real populations embedded clean and with two augmentations; returns the cache folder."""
    if not CELEBA.exists():
        pytest.exit(f"CelebA development set not found at {CELEBA}", returncode=2)
    base = tmp_path_factory.mktemp("populations")
    lfw = _link_people(LFW, base / "lfw-small", people=12, per_person=4)
    celeba = _link_people(CELEBA, base / "celeba-small", people=10, per_person=5)
    cache = base / "cache"
    for root, name in ((lfw, "lfw-small"), (celeba, "celeba-small")):
        for kind in ("clean", "flip", "blur"):
            embed_dataset(pipeline, root, name, MODELS, cache, kind, progress=False)
    return cache


def test_pairs_are_every_genuine_pair_and_distinct_impostors() -> None:
    identities = np.array([*"aaabbcccc", "d"])
    everything = verification_pairs(identities, max_impostors=10_000)
    loops = {(i, j) for i, j in itertools.combinations(range(len(identities)), 2)}
    got = set(zip(everything.left.tolist(), everything.right.tolist(), strict=True))
    assert got == loops and len(got) == len(everything.left)
    for i, j, same in zip(everything.left, everything.right, everything.genuine, strict=True):
        assert same == (identities[i] == identities[j])
    sampled = verification_pairs(identities, max_impostors=20, seed=3)
    assert sampled.genuine_pairs == everything.genuine_pairs and sampled.impostor_pairs == 20
    pairs = set(zip(sampled.left.tolist(), sampled.right.tolist(), strict=True))
    assert len(pairs) == len(sampled.left) and all(i < j for i, j in pairs)
    again = verification_pairs(identities, max_impostors=20, seed=3)
    assert np.array_equal(again.left, sampled.left) and np.array_equal(again.right, sampled.right)


def test_protocol_equals_a_loop_by_loop_recomputation(populations: Path) -> None:
    population = load_population(populations, "celeba-small", MODELS)
    a, b = population.clean["arcface-mbf128"], population.clean["dlib-r29-128"]
    pairs = verification_pairs(population.identities)
    scores, labels = pair_scores(a, b, pairs)
    expected, expected_labels = [], []
    for order in ((pairs.left, pairs.right), (pairs.right, pairs.left)):
        for i, j in zip(*order, strict=True):
            expected.append(float(sum(float(x) * float(y) for x, y in zip(a[i], b[j], strict=True))))
            expected_labels.append(population.identities[i] == population.identities[j])
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert labels.tolist() == expected_labels

    metrics = measure(scores, labels, {"far_1e-2": (0.5, 1e-2)})
    impostors = [s for s, same in zip(expected, expected_labels, strict=True) if not same]
    genuine = [s for s, same in zip(expected, expected_labels, strict=True) if same]
    check = metrics.far_checks[0]
    assert check.accepted == sum(s >= 0.5 for s in impostors) and check.impostors == len(impostors)
    assert check.interval[0] <= check.far <= check.interval[1]
    assert metrics.genuine_pairs == len(genuine)
    # TAR at FAR 1e-3 with fewer than 1,000 impostors: only thresholds above every impostor qualify
    assert metrics.tar_far_1e3 == pytest.approx(np.mean(np.array(genuine) > max(impostors)))
    # balanced accuracy: each fold's threshold is the best on the other folds
    assert 0.5 <= balanced_accuracy(scores, labels) <= 1.0


def test_balanced_accuracy_of_separable_and_random_scores() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(500, bool), np.zeros(5000, bool)]
    separable = np.r_[rng.uniform(0.6, 1.0, 500), rng.uniform(-1.0, 0.4, 5000)]
    assert balanced_accuracy(separable, labels) == 1.0
    noise = rng.uniform(-1, 1, len(labels))
    assert abs(balanced_accuracy(noise, labels) - 0.5) < 0.05


def test_augmented_rows_are_deterministic_per_seed(populations: Path) -> None:
    image = (np.random.default_rng(0).uniform(0, 255, (120, 100, 3))).astype(np.uint8)
    landmarks = np.array([[35, 50], [65, 50], [50, 65], [38, 85], [62, 85]], np.float32)
    for kind in AUGMENTATIONS:
        first = augment(image, landmarks, kind, "x/1.jpg", seed=7)
        second = augment(image, landmarks, kind, "x/1.jpg", seed=7)
        assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1]), kind
        assert first[0].shape == image.shape and first[0].dtype == np.uint8
    changed = [
        k
        for k in AUGMENTATIONS
        if not np.array_equal(
            augment(image, landmarks, k, "x/1.jpg", 8)[0], augment(image, landmarks, k, "x/1.jpg", 7)[0]
        )
    ]
    assert set(changed) >= {"blur", "jpeg", "exposure", "occlusion", "downscale"}
    mirrored = augment(image, landmarks, "flip", "x/1.jpg")[1]
    assert mirrored[0, 0] < mirrored[1, 0]  # the image-left eye is still first
    # the cached embeddings of an augmented variant do not change when the cache is rebuilt
    cache = EmbeddingCache.load(dataset_cache_path(populations, "lfw-small", "dlib-r29-128", "blur"))
    clean = EmbeddingCache.load(dataset_cache_path(populations, "lfw-small", "dlib-r29-128"))
    assert cache.meta["augmentation"] == "blur" and len(cache) == int(clean.detected.sum())
    assert not np.allclose(cache.embeddings, clean.lookup(list(cache.paths)))


def test_rebuilding_an_augmented_cache_reproduces_it(
    populations: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    original = EmbeddingCache.load(dataset_cache_path(populations, "celeba-small", "arcface-mbf128", "flip"))
    root = Path(str(original.meta["root"]))
    for name in ("celeba-small-landmarks-yunet.npz",):
        (tmp_path / name).write_bytes((populations / name).read_bytes())
    rebuilt = embed_dataset(
        pipeline, root, "celeba-small", ["arcface-mbf128"], tmp_path, "flip", progress=False
    )
    np.testing.assert_allclose(rebuilt["arcface-mbf128"].embeddings, original.embeddings, atol=1e-5)


def test_fitting_rows_stack_clean_and_variants(populations: Path) -> None:
    population = load_population(populations, "lfw-small", MODELS, ["flip", "blur"])
    x, y, groups = fitting_rows(population, "arcface-mbf128", "dlib-r29-128", ["flip", "blur"])
    flips = len(population.variants["flip"][0])
    assert len(x) == len(population) + flips + len(population.variants["blur"][0])
    assert x.shape[1] == 128 and y.shape[1] == 128
    assert set(groups) == set(population.identities)


def test_a_population_is_never_scored_by_a_map_fitted_on_it(populations: Path) -> None:
    lfw = load_population(populations, "lfw-small", MODELS, ["flip"])
    celeba = load_population(populations, "celeba-small", MODELS)
    with pytest.raises(ValueError, match="identities are in both"):
        check_disjoint(lfw, lfw)
    half = np.arange(len(lfw)) < len(lfw) // 2
    with pytest.raises(ValueError, match="in both populations"):
        study_direction(lfw.subset(half), lfw, "arcface-mbf128", "dlib-r29-128", ["ridge"], ["flip"])
    result = study_direction(
        lfw, celeba, "arcface-mbf128", "dlib-r29-128", ["ridge"], ["flip"], calibration="none"
    )
    assert result.fit_population == "lfw-small" and result.test_population == "celeba-small"
    assert result.fit_rows == len(lfw) + len(lfw.variants["flip"][0])
    assert result.cross.genuine_pairs == 2 * verification_pairs(celeba.identities).genuine_pairs
    assert result.native_target.far_checks  # thresholds calibrated on LFW checked on CelebA


def test_pair_sample_type_is_plain_arrays() -> None:
    sample = verification_pairs(np.array(["a", "a", "b"]))
    assert isinstance(sample, PairSample) and sample.left.dtype == np.int64


def test_partition_tar_equals_the_roc_definition() -> None:
    rng = np.random.default_rng(1)
    genuine, impostor = rng.normal(1, 1, 3000), rng.normal(-1, 1, 50_000)
    scores = np.r_[genuine, impostor]
    labels = np.r_[np.ones(3000, bool), np.zeros(50_000, bool)]
    roc_far, roc_tar, _ = roc_curve(scores, labels)
    for far in (1e-2, 1e-3, 1e-4):
        best_on_the_roc = roc_tar[roc_far <= far].max()  # the highest TAR whose FAR stays within
        assert tar_at(genuine, impostor, far) == pytest.approx(best_on_the_roc)
        assert tar_at_far(scores, labels, far) == pytest.approx(best_on_the_roc)


def test_residual_map_round_trips_through_its_file(populations: Path, tmp_path: Path) -> None:
    """A residual MLP fitted on real embeddings, written as a bank map, serves the estimator's outputs."""
    lfw = load_population(populations, "lfw-small", MODELS, ["flip"])
    celeba = load_population(populations, "celeba-small", MODELS)
    refs = {
        m: SpaceRef(
            model=m,
            dim=lfw.clean[m].shape[1],
            sha256=str(
                EmbeddingCache.load(dataset_cache_path(populations, "lfw-small", m)).meta["model_sha256"]
            ),
        )
        for m in MODELS
    }
    recipe = BankRecipe(
        methods=("ridge", "residual-mlp"),
        augmentations=("flip",),
        far_factors={"far_1e-3": 2.0},
        far_note="test factor",
    )
    fitted = fit_bank_map(merge([lfw, celeba]), refs["arcface-mbf128"], refs["dlib-r29-128"], recipe)
    assert fitted.meta.provenance.selection is not None and "validation" in fitted.meta.provenance.selection
    cross = fitted.meta.calibration.cross  # type: ignore[union-attr]
    assert cross.dataset == "lfw-small+celeba-small" and str(cross.method).startswith("cross-fitted")
    point = cross.thresholds["far_1e-3"]
    assert point.far_interval is not None and point.far_range is not None
    assert point.far_range[1] >= point.far_interval[1]

    # a residual fit, written and read back, gives the estimator's own outputs
    estimator = fit_estimator(lfw, "arcface-mbf128", "dlib-r29-128", "residual-mlp", ["flip"])
    assert isinstance(estimator, ResidualMLPMap)
    residual = ResidualTensors(
        estimator.in_weight_, estimator.in_bias_, estimator.out_weight_, estimator.out_bias_
    ).as_float32()
    meta = fitted.meta.model_copy(update={"method": "residual-mlp"})
    path = tmp_path / map_filename("arcface-mbf128", "dlib-r29-128")
    save_map(path, meta, estimator.coef_, estimator.intercept_, residual)
    bank = MappingBank.load(tmp_path)
    assert not bank.refused, bank.refused
    loaded = bank.maps[("arcface-mbf128", "dlib-r29-128")]
    assert loaded.nonlinear
    probe = np.ascontiguousarray(celeba.clean["arcface-mbf128"])
    np.testing.assert_allclose(loaded.apply(probe), mapped(estimator, probe), atol=2e-5)


def test_a_partial_cache_is_resumed_not_recomputed(
    populations: Path, pipeline: FacePipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache holding some photos (an interrupted or smaller run) is extended: only missing photos are
    embedded, and the result equals a run from scratch."""
    import facebridge.dataset_embedding as module

    complete = EmbeddingCache.load(dataset_cache_path(populations, "lfw-small", "arcface-mbf128", "flip"))
    root = Path(str(complete.meta["root"]))
    (tmp_path / "lfw-small-landmarks-yunet.npz").write_bytes(
        (populations / "lfw-small-landmarks-yunet.npz").read_bytes()
    )
    embed_dataset(
        pipeline, root, "lfw-small", ["arcface-mbf128"], tmp_path, "flip", subset=10, progress=False
    )
    partial = EmbeddingCache.load(dataset_cache_path(tmp_path, "lfw-small", "arcface-mbf128", "flip"))
    assert len(partial) == 10
    embedded: list[str] = []
    original = module._embed_chunk

    def counting(*args, **kwargs):
        embedded.extend(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "_embed_chunk", counting)
    resumed = embed_dataset(pipeline, root, "lfw-small", ["arcface-mbf128"], tmp_path, "flip", progress=False)
    assert set(embedded) == set(complete.paths.tolist()) - set(partial.paths.tolist())
    assert resumed["arcface-mbf128"].paths.tolist() == complete.paths.tolist()
    np.testing.assert_allclose(resumed["arcface-mbf128"].embeddings, complete.embeddings, atol=1e-5)
