"""Full-network embedding: layer features of a hand-built graph against numpy, the ternary transform's
thresholds, stored statistics pinned to the weights, and the real recognizers' layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facebridge.vision.alignment import align_face
from facebridge.vision.full_network import FullNetworkEmbedding
from facebridge.vision.images import decode_image
from facebridge.vision.layer_features import LayerFeatureExtractor, layer_tensors
from facebridge.vision.pipeline import DetectionOptions, FacePipeline
from facebridge.vision.registry import ModelRegistry


def tiny_cnn(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """x → Conv(3→4, 3x3) → BatchNorm → Relu → Conv(4→5, 1x1) → Relu → GAP → Flatten → Gemm(5→2)."""
    w1 = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    scale, shift = rng.uniform(0.5, 2, 4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    mean, var = rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    w2 = rng.normal(size=(5, 4, 1, 1)).astype(np.float32)
    wg = rng.normal(size=(2, 5)).astype(np.float32)
    bg = rng.normal(size=2).astype(np.float32)
    params = {
        "w1": w1,
        "scale": scale,
        "shift": shift,
        "mean": mean,
        "var": var,
        "w2": w2,
        "wg": wg,
        "bg": bg,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "scale", "shift", "mean", "var"], ["bn1"], epsilon=1e-5
        ),
        helper.make_node("Relu", ["bn1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])],
        [numpy_helper.from_array(v, k) for k, v in params.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return params


def numpy_layers(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """The same network by hand: pooled Relu outputs of both convs, then the Gemm output."""
    n = len(x)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # n,3,6,6,3,3
    c1 = np.einsum("nchwij,ocij->nohw", windows, p["w1"])
    bn = (c1 - p["mean"][:, None, None]) / np.sqrt(p["var"][:, None, None] + 1e-5)
    r1 = np.maximum(bn * p["scale"][:, None, None] + p["shift"][:, None, None], 0)
    r2 = np.maximum(np.einsum("nchw,oc->nohw", r1, p["w2"][:, :, 0, 0]), 0)
    f = r2.mean(axis=(2, 3))
    logits = f @ p["wg"].T + p["bg"]
    return np.concatenate([r1.mean(axis=(2, 3)), f, logits], axis=1).reshape(n, -1)


def test_layer_features_of_a_hand_built_cnn_equal_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    params = tiny_cnn(tmp_path / "tiny.onnx", rng)
    assert [op for _, op in layer_tensors(onnx.load(str(tmp_path / "tiny.onnx")))] == ["Conv", "Conv", "Gemm"]
    extractor = LayerFeatureExtractor(tmp_path / "tiny.onnx")
    x = rng.normal(size=(5, 3, 6, 6)).astype(np.float32)
    features = extractor(x)
    assert features.shape == (5, 4 + 5 + 2) and extractor.dim == 11
    assert [layer.channels for layer in extractor.layers] == [4, 5, 2]
    np.testing.assert_allclose(features, numpy_layers(x.astype(np.float64), params), rtol=1e-4, atol=1e-4)


def test_transform_standardises_then_codes_at_the_thresholds() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(3.0, 2.0, size=(1000, 3))
    data[:, 2] = 7.0  # constant over the dataset
    fne = FullNetworkEmbedding().fit(data)
    mean, std = data.mean(axis=0), data.std(axis=0)
    z = np.array([[-0.26, -0.24, 0.0], [0.14, 0.16, 0.0], [-5.0, 5.0, 0.0]])
    probe = z * np.r_[std[:2], 1.0] + np.r_[mean[:2], 7.0]
    probe[:, 2] = [7.0, 100.0, -100.0]
    codes = fne.transform(probe)
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(codes, [[-1, 0, 0], [0, 1, 0], [-1, 1, 0]])
    with pytest.raises(ValueError, match="expected"):
        fne.transform(probe[:, :2])
    with pytest.raises(ValueError, match="below"):
        FullNetworkEmbedding(low=0.2, high=0.1)


def test_statistics_round_trip_and_are_refused_for_other_weights(tmp_path: Path) -> None:
    fne = FullNetworkEmbedding().fit(np.random.default_rng(2).normal(size=(50, 6)))
    fne.save(tmp_path / "stats.npz", "m", "a" * 64, [{"name": "fne_000", "channels": 6}])
    loaded, meta = FullNetworkEmbedding.load(tmp_path / "stats.npz", "a" * 64)
    np.testing.assert_array_equal(loaded.mean_, fne.mean_)
    assert meta["layers"][0]["channels"] == 6
    with pytest.raises(ValueError, match="fitted on weights"):
        FullNetworkEmbedding.load(tmp_path / "stats.npz", "b" * 64)


@pytest.mark.parametrize("model_id", ["arcface-mbf128", "sirius-mbf192"])
def test_real_recognizer_full_network_codes_separate_people(
    registry: ModelRegistry, pipeline: FacePipeline, lfw: Path, model_id: str
) -> None:
    """Every conv layer of a real recognizer comes out pooled; the ternary codes of 40 LFW people keep
    genuine pairs well above impostor pairs."""
    recognizer = registry.recognizer(model_id)
    extractor = LayerFeatureExtractor(registry.model_path(model_id))
    convs = sum(1 for n in onnx.load(str(registry.model_path(model_id))).graph.node if n.op_type == "Conv")
    template = registry.manifest.templates[recognizer.entry.alignment or ""]
    people = sorted(p for p in lfw.iterdir() if len(list(p.glob("*.jpg"))) >= 3)[:40]
    crops, labels = [], []
    for person in people:
        for photo in sorted(person.glob("*.jpg"))[:3]:
            image = decode_image(photo.read_bytes(), 1 << 30, 1 << 28)
            faces = pipeline.detect(image, DetectionOptions(score_threshold=0.3, policy="center"))
            crops.append(align_face(image, faces[0].landmarks, template))
            labels.append(person.name)
    tensor = recognizer.preprocess(crops)
    features = extractor(tensor)
    assert convs // 2 < len(extractor.layers) <= convs + 2
    assert features.shape == (len(crops), extractor.dim) and np.isfinite(features).all()
    codes = FullNetworkEmbedding().fit(features).transform(features).astype(np.float64)
    assert set(np.unique(codes)) == {-1, 0, 1}
    unit = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    scores = unit @ unit.T
    same = np.equal.outer(labels, labels)
    off = ~np.eye(len(labels), dtype=bool)
    genuine, impostor = scores[same & off], scores[~same]
    assert genuine.mean() > impostor.mean() + 0.15
    # ranking: the nearest other photo is of the same person far more often than chance (2/119)
    np.fill_diagonal(scores, -np.inf)
    assert np.mean(same[np.arange(len(labels)), scores.argmax(axis=1)]) > 0.5
