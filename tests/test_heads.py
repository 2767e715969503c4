"""Closed-form maps from classifier heads: exact recovery on synthetic heads, head extraction from ONNX
graphs and .npy files, and `facebridge fit --from-heads` writing a verified map file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facebridge.mapping.heads import ClassifierHead, HeadMap, head_from_npy, head_from_onnx, load_head
from facebridge.mapping.mapfile import load_map

ROOT = Path(__file__).resolve().parents[1]


def synthetic_heads(
    rng: np.random.Generator, d_a: int = 12, d_b: int = 9, classes: int = 50
) -> tuple[ClassifierHead, ClassifierHead, np.ndarray, np.ndarray]:
    """B's head is arbitrary; A's is built so that A's logits of f equal B's logits of f M + c."""
    m, c = rng.normal(size=(d_a, d_b)), rng.normal(size=d_b)
    wb, bb = rng.normal(size=(d_b, classes)), rng.normal(size=classes)
    wa, ba = m @ wb, c @ wb + bb
    return ClassifierHead(wa, ba), ClassifierHead(wb, bb), m, c


@pytest.mark.parametrize("centre", [True, False])
def test_recovers_the_map_that_equates_the_logits(centre: bool) -> None:
    rng = np.random.default_rng(0)
    head_a, head_b, m, c = synthetic_heads(rng)
    fitted = HeadMap(centre_logits=centre).fit_heads(head_a, head_b)
    np.testing.assert_allclose(fitted.coef_, m, atol=1e-8)
    np.testing.assert_allclose(fitted.intercept_, c, atol=1e-8)
    f = rng.normal(size=(20, 12))
    np.testing.assert_allclose(head_b.logits(fitted.transform(f)), head_a.logits(f), atol=1e-8)


def test_centring_ignores_a_per_class_constant_softmax_cannot_see() -> None:
    """Adding the same constant to every logit changes no prediction; the centred map is unchanged."""
    rng = np.random.default_rng(1)
    head_a, head_b, m, c = synthetic_heads(rng)
    shifted = ClassifierHead(head_a.weight + rng.normal(size=(12, 1)), head_a.bias + 3.0)
    fitted = HeadMap().fit_heads(shifted, head_b)
    np.testing.assert_allclose(fitted.coef_, m, atol=1e-8)
    np.testing.assert_allclose(fitted.intercept_, c, atol=1e-8)


def test_heads_must_share_classes_and_data_fit_is_refused() -> None:
    rng = np.random.default_rng(2)
    head_a, _, _, _ = synthetic_heads(rng)
    other = ClassifierHead(rng.normal(size=(9, 49)), np.zeros(49))
    with pytest.raises(ValueError, match="share"):
        HeadMap().fit_heads(head_a, other)
    with pytest.raises(TypeError, match="fit_heads"):
        HeadMap().fit(np.zeros((3, 12)), np.zeros((3, 9)))


def _save_graph(
    path: Path, nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], d: int, k: int
) -> None:
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", d])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", k])],
        [numpy_helper.from_array(v.astype(np.float32), name) for name, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_head_extraction_from_gemm_matmul_and_conv(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(6, 10)), rng.normal(size=10)
    _save_graph(
        tmp_path / "gemm.onnx", [helper.make_node("Gemm", ["features", "W", "b"], ["logits"], transB=1)],
        {"W": w.T, "b": b}, 6, 10,
    )  # fmt: skip
    _save_graph(
        tmp_path / "matmul.onnx",
        [helper.make_node("MatMul", ["features", "W"], ["z"]),
         helper.make_node("Add", ["z", "b"], ["logits"])],
        {"W": w, "b": b}, 6, 10,
    )  # fmt: skip
    for name in ("gemm.onnx", "matmul.onnx"):
        head = head_from_onnx(tmp_path / name)
        np.testing.assert_allclose(head.weight, w, atol=1e-6)
        np.testing.assert_allclose(head.bias, b, atol=1e-6)
        assert head.feature_tensor == "features"
    conv = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "b"], ["logits"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 1, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10, 1, 1])],
        [numpy_helper.from_array(w.T[:, :, None, None].astype(np.float32), "W"),
         numpy_helper.from_array(b.astype(np.float32), "b")],
    )  # fmt: skip
    onnx.save(
        helper.make_model(conv, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "conv.onnx")
    )
    head = head_from_onnx(tmp_path / "conv.onnx")
    np.testing.assert_allclose(head.weight, w, atol=1e-6)


def test_head_from_npy_accepts_both_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    w, b = rng.normal(size=(6, 10)), rng.normal(size=10)
    np.save(tmp_path / "w_torch.npy", w.T)  # (classes, features), as a PyTorch Linear stores it
    np.save(tmp_path / "b.npy", b)
    head = load_head(f"{tmp_path / 'w_torch.npy'},{tmp_path / 'b.npy'}")
    np.testing.assert_allclose(head.weight, w)
    np.savez(tmp_path / "head.npz", weight=w, bias=b)
    np.testing.assert_allclose(head_from_npy(tmp_path / "head.npz").weight, w)


def test_cli_fit_from_heads_writes_a_verified_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    head_a, head_b, m, c = synthetic_heads(rng)
    np.savez(tmp_path / "a.npz", weight=head_a.weight, bias=head_a.bias)
    np.savez(tmp_path / "b.npz", weight=head_b.weight, bias=head_b.bias)
    f = rng.normal(size=(30, 12))
    np.save(tmp_path / "fa.npy", f)
    np.save(tmp_path / "fb.npy", f @ m + c)
    result = subprocess.run(
        [sys.executable, "-m", "facebridge", "fit", "--from-heads",
         str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
         "--source-model", "net-a", "--target-model", "net-b", "--source-sha256", "a" * 64,
         "--target-sha256", "b" * 64, "--source-npy", str(tmp_path / "fa.npy"),
         "--target-npy", str(tmp_path / "fb.npy"), "--out", str(tmp_path / "maps")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "50 shared classes" in result.stdout and "mean cosine 1.0000" in result.stdout
    loaded = load_map(tmp_path / "maps" / "net-a__net-b.safetensors")
    assert loaded.meta.method == "heads" and loaded.meta.provenance.images == 0
    assert loaded.residual is None
    np.testing.assert_allclose(loaded.weight, m, atol=1e-5)
    np.testing.assert_allclose(loaded.bias, c, atol=1e-5)


IMAGENET = ROOT / ".cache" / "imagenet"  # made by `make imagenet` (scripts/imagenet_classifiers.py)


def test_real_classifiers_closed_form_map_keeps_the_decisions() -> None:
    """EfficientNet-Lite0 features carried into Lite2's space by the heads alone: Lite2's head then
    classifies the 20 labelled ImageNet photos about as well as either network does on its own."""
    import csv

    from benchmarks.heads_imagenet import MODELS, run_model

    if not (IMAGENET / "photos.csv").exists():
        pytest.fail("run `make imagenet` first: the two classifiers are built from PyPI wheels")
    with (IMAGENET / "photos.csv").open() as f:
        rows = [(IMAGENET / "photos" / name, int(label)) for name, label in csv.reader(f)]
    photos, labels = [p for p, _ in rows], np.array([label for _, label in rows])
    a, b = (IMAGENET / f"{name}.onnx" for name in MODELS)
    fa, za = run_model(a, "efficientnet-lite0", photos)
    _, zb = run_model(b, "efficientnet-lite2", photos)
    head_a, head_b = head_from_onnx(a), head_from_onnx(b)
    assert head_a.classes == head_b.classes == 1000 and head_a.weight.shape == (1280, 1000)
    np.testing.assert_allclose(
        head_a.logits(fa), za, atol=1e-3
    )  # the head read from the graph is the graph's
    mapped = HeadMap().fit_heads(head_a, head_b).transform(fa)
    predicted = head_b.logits(mapped).argmax(axis=1)
    own_a, own_b = za.argmax(axis=1), zb.argmax(axis=1)
    assert np.mean(own_a == labels) >= 0.85 and np.mean(own_b == labels) >= 0.85
    assert np.mean(predicted == own_a) >= 0.9  # the map reproduces A's decisions through B's head
    assert np.mean(predicted == labels) >= 0.8
    # a map between unrelated spaces would not: shuffled features lose the decisions
    shuffled = (
        HeadMap().fit_heads(head_a, head_b).transform(fa[:, np.random.default_rng(0).permutation(1280)])
    )
    assert np.mean(head_b.logits(shuffled).argmax(axis=1) == labels) < 0.3
