"""The model probe finds how to feed each real recognizer without its manifest entry.

For every shared recognizer the entry is hidden (the probe sees a manifest with templates and the
detector only), the probe chooses preprocessing on LFW people who are *not* in the scored pairs, and
the chosen entry is scored through the service's own Recognizer on every other pair of LFW folds 1-2
(600 pairs, half of them genuine; threshold chosen on the other fold) against the manifest's own
preprocessing. Half the pairs halve the photos embedded per entry: the module took a third of
`make test` with all 1,200. Marked `slow` (`pytest -m "not slow"` leaves the accuracy tests out).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from facebridge.cli.models import add_model
from facebridge.config import Settings
from facebridge.evaluation.lfw import pair_images, read_pairs
from facebridge.evaluation.metrics import ten_fold_accuracy
from facebridge.vision.loading import open_registry
from facebridge.vision.manifest import Manifest, ModelEntry, sha256_file
from facebridge.vision.model_probe import (
    DYNAMIC_SIZES,
    NORMALISATIONS,
    AlignedPhotos,
    Candidate,
    Color,
    Normalisation,
    ProbeError,
    candidates_for,
    default_detector,
    embed_with,
    entry_for,
    inspect_graph,
    open_session,
    propose_entry,
    sample_photos,
    scaled_arcface,
    templates_for,
)
from facebridge.vision.recognizer import Recognizer
from facebridge.vision.user_manifest import UserManifestError, dump_user_manifest, write_user_entry

from .conftest import MODELS_DIR, RECOGNIZERS

SCORED_FOLDS = 2  # LFW folds 1-2 of pairs.txt
PAIR_STEP = 2  # every other pair: each fold's 300 genuine then 300 impostor pairs keep half of each
TOLERANCE = 0.003  # the probed entry may score at most 0.3 point below the manifest's own preprocessing


@dataclass
class ScoredPairs:
    photos: AlignedPhotos
    left: np.ndarray
    right: np.ndarray
    labels: np.ndarray
    folds: np.ndarray

    embedded: dict[tuple, np.ndarray] = field(default_factory=dict)

    def embed(self, entry: ModelEntry, manifest: Manifest) -> np.ndarray:
        """Embeddings as the service computes them (Recognizer, the entry's template), once per
        distinct preprocessing (the probe often proposes exactly the manifest's)."""
        key = (entry.file, entry.alignment, entry.layout, entry.color, entry.mean, entry.std)
        if key not in self.embedded:
            path = MODELS_DIR / entry.file
            recognizer = Recognizer(entry, open_session(path), sha256_file(path))
            crops = self.photos.crops(manifest.templates[entry.alignment or ""])
            self.embedded[key] = embed_with(recognizer, crops)
        return self.embedded[key]

    def accuracy(self, entry: ModelEntry, manifest: Manifest) -> float:
        """LFW accuracy over the scored folds, each fold's threshold chosen on the other."""
        embeddings = self.embed(entry, manifest)
        scores = np.einsum("ij,ij->i", embeddings[self.left], embeddings[self.right])
        return ten_fold_accuracy(scores, self.labels, self.folds).mean


@pytest.fixture(scope="module")
def full_manifest(settings: Settings) -> Manifest:
    return settings.load_manifest()


@pytest.fixture(scope="module")
def hidden_settings(full_manifest: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose manifest has the templates and the detectors but none of the recognizers."""
    folder = tmp_path_factory.mktemp("hidden")
    templates = {name: t.model_dump() for name, t in full_manifest.templates.items()}
    detectors = [m.model_dump(exclude_none=True) for m in full_manifest.of_kind("detector")]
    (folder / "manifest.toml").write_text(dump_user_manifest(templates, detectors))
    hidden = Settings(
        models_dir=MODELS_DIR,
        manifest=folder / "manifest.toml",
        user_manifest=folder / "user-manifest.toml",
        providers="cpu",
    )
    assert not hidden.load_manifest().of_kind("recognizer")
    return hidden


@pytest.fixture(scope="module")
def scored(lfw: Path, settings: Settings) -> ScoredPairs:
    pairs = [p for p in read_pairs(lfw / "pairs.txt") if p.fold < SCORED_FOLDS][::PAIR_STEP]
    images = pair_images(pairs)
    photos = AlignedPhotos.detect(lfw, images, [i.split("/")[0] for i in images], default_detector(settings))
    index = {path: i for i, path in enumerate(images)}
    return ScoredPairs(
        photos,
        np.array([index[p.left] for p in pairs]),
        np.array([index[p.right] for p in pairs]),
        np.array([p.same for p in pairs]),
        np.array([p.fold for p in pairs]),
    )


@pytest.fixture(scope="module")
def fitting(lfw: Path, settings: Settings, scored: ScoredPairs) -> AlignedPhotos:
    """Photos the probe chooses on: LFW people who appear in none of the scored pairs."""
    scored_people = set(scored.photos.identities.tolist())
    photos = sample_photos(lfw, default_detector(settings), exclude=scored_people)  # 120 people, <= 5 each
    assert not scored_people & set(photos.identities.tolist())
    return photos


@pytest.mark.slow
@pytest.mark.parametrize("model_id", RECOGNIZERS)
def test_probe_reaches_manifest_accuracy(
    model_id: str,
    full_manifest: Manifest,
    hidden_settings: Settings,
    scored: ScoredPairs,
    fitting: AlignedPhotos,
) -> None:
    known = full_manifest.get(model_id)
    assert known is not None
    result = propose_entry(
        MODELS_DIR / known.file, f"probed-{model_id}", None, settings=hidden_settings, photos=fitting
    )
    probed = ModelEntry.model_validate(result.entry)
    # what the graph says must agree with the hand-written entry
    assert (probed.input_name, probed.layout, probed.size, probed.dim) == (
        known.input_name,
        known.layout,
        known.size,
        known.dim,
    )
    assert (probed.alignment, probed.sha256, probed.output) == (known.alignment, known.sha256, known.output)
    manifest_accuracy = scored.accuracy(known, full_manifest)
    probed_accuracy = scored.accuracy(probed, full_manifest)
    print(
        f"\n{model_id:<18} manifest {known.color} ({known.mean:g},{known.std:g}) {manifest_accuracy:.4f}"
        f" | probed {result.chosen.candidate.label} {probed_accuracy:.4f}"
        f" | fit {result.photos} photos / {result.people} people"
    )
    assert probed_accuracy >= manifest_accuracy - TOLERANCE, result.format_table()


def test_inspect_graph_reads_layout_size_and_embedding_output() -> None:
    hse = inspect_graph(MODELS_DIR / "hse_faceres_mobilenet_vggface2_1024.onnx")
    assert (hse.layouts, hse.sizes, hse.dim, hse.output_index, hse.output_name, hse.batch) == (
        ("NHWC",),
        (224,),
        1024,
        1,
        "global_pooling/Mean",
        "dynamic",
    )
    faceplugin = inspect_graph(MODELS_DIR / "faceplugin_fr_feature_mbf512.onnx")
    assert (faceplugin.layout, faceplugin.size, faceplugin.dim, faceplugin.batch) == (
        "NCHW",
        112,
        512,
        "fixed",
    )


def test_not_onnx_is_refused_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("this is not a model\n")
    with pytest.raises(ProbeError, match=r"bogus\.onnx is not an ONNX model onnxruntime can load"):
        inspect_graph(bogus)
    with pytest.raises(ProbeError, match="not an ONNX model"):
        propose_entry(bogus, "bogus", tmp_path)
    with pytest.raises(ProbeError, match="no such file"):
        inspect_graph(tmp_path / "missing.onnx")
    # a detector takes an image too, but no output is a batch of vectors
    with pytest.raises(ProbeError, match="is it a recognizer"):
        inspect_graph(MODELS_DIR / "face_detection_yunet_2023mar.onnx")


def _sirius_entry(model_id: str, color: Color = "RGB") -> dict:
    path = MODELS_DIR / "mobilefacenet_sirius_tf_192.onnx"
    candidate = Candidate("arcface112", 112, "NHWC", color, Normalisation("(x-127.5)/128", 127.5, 128.0))
    return entry_for(candidate, inspect_graph(path), model_id, path.name, sha256_file(path))


def test_write_user_entry_is_seen_by_load_manifest(tmp_path: Path) -> None:
    user = tmp_path / "conf" / "user-manifest.toml"
    settings = Settings(models_dir=MODELS_DIR, user_manifest=user)
    write_user_entry(settings, _sirius_entry("mine-a"))
    entry_b = _sirius_entry("mine-b") | {"size": 160, "alignment": "arcface160"}
    write_user_entry(settings, entry_b, {"arcface160": scaled_arcface(160).model_dump()})
    write_user_entry(
        settings, _sirius_entry("mine-a", color="BGR") | {"source": {"note": 'a "quoted"\nnote'}}
    )

    manifest = settings.load_manifest()
    mine_a, mine_b = manifest.get("mine-a"), manifest.get("mine-b")
    assert mine_a is not None and mine_a.color == "BGR" and mine_a.source.note == 'a "quoted"\nnote'
    assert mine_b is not None and manifest.templates["arcface160"].size == 160
    assert manifest.get("arcface-mbf128") is not None  # the base manifest is still there
    assert sorted(m.id for m in manifest.models if m.id.startswith("mine-")) == ["mine-a", "mine-b"]
    assert not list(user.parent.glob("*.tmp"))

    before = user.read_text()
    with pytest.raises(UserManifestError, match="not a valid manifest entry"):
        write_user_entry(settings, _sirius_entry("bad id!"))
    with pytest.raises(UserManifestError, match="would not load"):
        write_user_entry(settings, _sirius_entry("mine-c") | {"alignment": "no-such-template"})
    assert user.read_text() == before


def test_add_model_installs_file_and_entry(tmp_path: Path, lfw: Path) -> None:
    """`facebridge models add` end to end on a small photo set: file copied, entry loadable and served."""
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    shutil.copy(MODELS_DIR / "face_detection_yunet_2023mar.onnx", models_dir)
    settings = Settings(models_dir=models_dir, providers="cpu")
    source = MODELS_DIR / "insightface_mobilefacenet_y1_arcface_128.onnx"
    with pytest.raises(ProbeError, match="already in the manifest"):
        add_model(settings, source, "arcface-mbf128", lfw)
    result = add_model(settings, source, "arcface-copy", lfw, people=16, per_person=2)
    assert (models_dir / source.name).is_file()
    assert (result.entry["mean"], result.entry["std"]) == (0.0, 1.0)  # the graph normalises itself
    registry = open_registry(settings, model_ids=["arcface-copy", "yunet"])
    assert registry.status["arcface-copy"].state == "loaded", registry.status["arcface-copy"].reason
    assert "*" in result.format_table()


def test_bad_id_is_refused_before_any_photo_is_read(tmp_path: Path) -> None:
    with pytest.raises(UserManifestError, match="not a valid manifest entry: id"):
        propose_entry(MODELS_DIR / "mobilefacenet_sirius_tf_192.onnx", "bad id!", tmp_path / "no-photos")


def _pooling_graph(path: Path, input_shape: list) -> Path:
    """A tiny ONNX graph (global average pool, flatten) with an open input size."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_open_input_sizes_and_layouts_become_candidates(tmp_path: Path, full_manifest: Manifest) -> None:
    info = inspect_graph(_pooling_graph(tmp_path / "hw.onnx", ["N", 3, "H", "W"]))
    assert (info.layouts, info.sizes, info.dim, info.output_name) == (("NCHW",), DYNAMIC_SIZES, 3, "y")
    templates = templates_for(info.sizes, full_manifest.templates)
    assert sorted(templates) == ["arcface112", "arcface160", "dlib150", "hse224"]
    assert templates["arcface160"].points[0] == pytest.approx((38.2946 * 160 / 112, 51.6963 * 160 / 112))
    open_all = inspect_graph(_pooling_graph(tmp_path / "all.onnx", ["N", "C", "H", "W"]))
    assert open_all.layouts == ("NCHW", "NHWC")
    assert len(candidates_for(open_all, templates)) == 4 * 2 * 2 * len(NORMALISATIONS)
