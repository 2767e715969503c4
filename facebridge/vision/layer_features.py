"""Every convolutional layer of an ONNX CNN as a pooled feature vector (for full-network embeddings).

The graph is edited in memory, never on disk: for each Conv node the activation it feeds (through a
BatchNormalization, if any) is taken as the layer's output, spatially averaged (GlobalAveragePool) and
flattened, and all of them become extra graph outputs. Gemm layers are taken as they are. One
onnxruntime run then returns the features of all layers, concatenated in graph order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from facebridge.vision.runtime import session_options

ACTIVATIONS = {"Relu", "PRelu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu"}


@dataclass(frozen=True)
class Layer:
    name: str  # the tensor pooled
    op: str  # "Conv" or "Gemm"
    channels: int


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _layer_output(tensor: str, users: dict[str, list[onnx.NodeProto]]) -> str:
    """Follow a Conv's output through a sole BatchNormalization and a sole activation, if present."""
    for kinds in ({"BatchNormalization"}, ACTIVATIONS):
        following = users.get(tensor, [])
        if len(following) == 1 and following[0].op_type in kinds:
            tensor = following[0].output[0]
    return tensor


def layer_tensors(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(tensor, op) of every Conv layer's (activated) output and every Gemm output, in graph order."""
    users = _consumers(model.graph)
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "Conv":
            tensor = _layer_output(node.output[0], users)
        elif node.op_type == "Gemm":
            tensor = node.output[0]
        else:
            continue
        if tensor not in seen:
            seen.add(tensor)
            found.append((tensor, node.op_type))
    return found


def with_layer_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str], list[str]]:
    """A copy of `model` whose outputs are the pooled layers; returns (model, output names, ops)."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    graph = edited.graph
    del graph.output[:]
    names, ops = [], []
    for i, (tensor, op) in enumerate(layer_tensors(model)):
        out = f"fne_{i:03d}"
        if op == "Conv":
            pooled = f"{out}_pooled"
            graph.node.append(helper.make_node("GlobalAveragePool", [tensor], [pooled], name=f"{out}_gap"))
            graph.node.append(helper.make_node("Flatten", [pooled], [out], name=f"{out}_flatten", axis=1))
        else:
            graph.node.append(helper.make_node("Flatten", [tensor], [out], name=f"{out}_flatten", axis=1))
        graph.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
        names.append(out)
        ops.append(op)
    if not names:
        raise ValueError("the graph has no Conv or Gemm layer to take features from")
    return edited, names, ops


class LayerFeatureExtractor:
    """Runs a CNN once and returns the pooled output of every layer, concatenated: (n, total channels)."""

    def __init__(self, path: Path, providers: list[str] | None = None, intra_op_threads: int = 0):
        model = onnx.load(str(path))
        edited, self.output_names, ops = with_layer_outputs(model)
        self._session = ort.InferenceSession(
            edited.SerializeToString(),
            sess_options=session_options(intra_op_threads),
            providers=providers or ["CPUExecutionProvider"],
        )
        self._input_name = self._session.get_inputs()[0].name
        self.fixed_batch = isinstance(self._session.get_inputs()[0].shape[0], int)
        self._ops = ops
        self.layers: list[Layer] = []

    def __call__(self, tensor: np.ndarray) -> np.ndarray:
        """Features for a preprocessed input batch (the recognizer's own preprocessing)."""
        if self.fixed_batch:
            rows = [self._run(t[None]) for t in tensor]
            return np.concatenate(rows) if rows else np.empty((0, self.dim), np.float32)
        return self._run(tensor)

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        outputs = self._session.run(self.output_names, {self._input_name: tensor})
        if not self.layers:
            self.layers = [
                Layer(name, op, int(o.shape[1]))
                for name, op, o in zip(self.output_names, self._ops, outputs, strict=True)
            ]
        return np.concatenate([np.asarray(o, np.float32).reshape(len(tensor), -1) for o in outputs], axis=1)

    @property
    def dim(self) -> int:
        return sum(layer.channels for layer in self.layers)
