"""Closed-form maps from classifier heads: no data, only the two networks' final-layer weights.

Two networks trained on the same classes with a softmax back end score class k as z_k = f·w_k + b_k.
If A's feature f_A is carried to a feature of B that B's head scores the way A's head scores f_A,

    f_A W_A + b_A  ≈  f_B W_B + b_B    →    f_B = (f_A W_A + b_A - b_B) W_B⁺,

then coef_ = W_A W_B⁺ and intercept_ = (b_A - b_B) W_B⁺ (W: features x classes, rows as vectors).
Softmax ignores a constant added to all of a row's logits, so by default both sides' logits are centred
over the classes first (W → W C, b → b C with C = I - 11ᵀ/K): B's features need only reproduce A's
logits up to that constant, which the pseudo-inverse then does not waste capacity on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from facebridge.mapping.estimators import AffineMapEstimator


@dataclass(frozen=True)
class ClassifierHead:
    """A final layer z = f @ weight + bias; weight is (features, classes)."""

    weight: np.ndarray
    bias: np.ndarray
    feature_tensor: str | None = None  # the graph tensor feeding the layer, when read from ONNX
    source: str = ""

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[1],):
            raise ValueError(f"head weight {self.weight.shape} and bias {self.bias.shape} do not match")

    @property
    def classes(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weight + self.bias


class HeadMap(AffineMapEstimator):
    """f_A ↦ f_B whose B-logits equal A's (least squares over the classes), fitted from heads alone."""

    method = "heads"

    def __init__(self, centre_logits: bool = True, rcond: float = 1e-6):
        self.centre_logits = centre_logits
        self.rcond = rcond

    def get_params(self) -> dict[str, Any]:
        return {"centre_logits": self.centre_logits, "rcond": self.rcond}

    def fit_heads(self, head_a: ClassifierHead, head_b: ClassifierHead) -> Self:
        if head_a.classes != head_b.classes:
            raise ValueError(
                f"the heads score {head_a.classes} and {head_b.classes} classes; they must share them"
            )
        wa, ba = head_a.weight.astype(np.float64), head_a.bias.astype(np.float64)
        wb, bb = head_b.weight.astype(np.float64), head_b.bias.astype(np.float64)
        if self.centre_logits:
            wa, wb = wa - wa.mean(axis=1, keepdims=True), wb - wb.mean(axis=1, keepdims=True)
            ba, bb = ba - ba.mean(), bb - bb.mean()
        pinv_b = np.linalg.pinv(wb, rcond=self.rcond)  # (classes, features_b)
        self.coef_ = wa @ pinv_b
        self.intercept_ = (ba - bb) @ pinv_b
        self.n_classes_ = head_a.classes
        return self

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Self:
        raise TypeError("a head map is fitted from two classifier heads: use fit_heads(head_a, head_b)")


def _initializers(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def head_from_onnx(path: Path, node_name: str | None = None) -> ClassifierHead:
    """The last Gemm (or MatMul + Add, or 1x1 Conv) of an ONNX classifier, as (features, classes)."""
    import onnx

    model = onnx.load(str(path))
    weights = _initializers(model)
    candidates = [
        n for n in model.graph.node if n.op_type in ("Gemm", "MatMul", "Conv") and n.input[1] in weights
    ]
    if node_name is not None:
        candidates = [n for n in candidates if n.name == node_name]
    if not candidates:
        raise ValueError(
            f"{path}: no Gemm, MatMul or Conv layer with constant weights"
            + (f" named {node_name}" if node_name else "")
        )
    node = candidates[-1]
    weight = weights[node.input[1]].astype(np.float64)
    bias = (
        weights[node.input[2]].astype(np.float64)
        if len(node.input) > 2 and node.input[2] in weights
        else None
    )
    if node.op_type == "Gemm":
        attrs = {a.name: a for a in node.attribute}
        if attrs.get("transB") is not None and attrs["transB"].i:
            weight = weight.T
    elif node.op_type == "Conv":
        if weight.shape[2:] != (1, 1):
            raise ValueError(
                f"{path}: the last Conv ({node.name}) is not 1x1, so it is not a classifier head"
            )
        weight = weight[:, :, 0, 0].T
    else:  # MatMul: the bias, if any, is the Add that consumes its output
        for other in model.graph.node:
            if other.op_type == "Add" and node.output[0] in other.input:
                constant = [i for i in other.input if i in weights]
                if constant:
                    bias = weights[constant[0]].astype(np.float64).reshape(-1)
                break
    if bias is None:
        bias = np.zeros(weight.shape[1])
    return ClassifierHead(weight, bias.reshape(-1), node.input[0], f"{path.name}:{node.name or node.op_type}")


def head_from_npy(weight_path: Path, bias_path: Path | None = None) -> ClassifierHead:
    """Weights from .npy, or one .npz holding `weight` and `bias`. The weight is (features, classes);
    a (classes, features) weight, as PyTorch stores it, is recognised by its rows matching the bias."""
    if weight_path.suffix == ".npz":
        with np.load(weight_path, allow_pickle=False) as data:
            weight, bias = np.asarray(data["weight"]), np.asarray(data["bias"]) if "bias" in data else None
    else:
        weight = np.load(weight_path, allow_pickle=False)
        bias = np.load(bias_path, allow_pickle=False) if bias_path is not None else None
    if weight.ndim != 2:
        raise ValueError(f"{weight_path}: a head's weight must be 2-D, got {weight.shape}")
    if bias is not None and bias.shape[0] == weight.shape[0] and weight.shape[0] != weight.shape[1]:
        weight = weight.T  # stored (classes, features), as PyTorch's Linear does
    if bias is None:
        bias = np.zeros(weight.shape[1])
    return ClassifierHead(
        weight.astype(np.float64), bias.astype(np.float64).reshape(-1), None, weight_path.name
    )


def load_head(spec: str) -> ClassifierHead:
    """HEAD as `model.onnx`, `model.onnx#NodeName`, `weights.npz`, or `weight.npy[,bias.npy]`."""
    if ".onnx" in spec:
        path, _, node = spec.partition("#")
        return head_from_onnx(Path(path), node or None)
    weight, _, bias = spec.partition(",")
    return head_from_npy(Path(weight), Path(bias) if bias else None)
