"""A face recognizer: aligned crops in, embeddings out, with the model's own preprocessing."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from facebridge.linalg import l2_normalize
from facebridge.metrics import INFERENCE
from facebridge.vision.manifest import ModelEntry

if TYPE_CHECKING:
    import onnxruntime as ort

# pixel types every value of which float32 holds exactly: converted inside the arithmetic
_EXACT_IN_FLOAT32 = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.float32)}


class Recognizer:
    """One ONNX recognizer session, loaded once and shared by all requests (session.run is thread-safe)."""

    def __init__(self, entry: ModelEntry, session: ort.InferenceSession, sha256: str):
        assert entry.size is not None and entry.dim is not None
        self.entry = entry
        self.sha256 = sha256
        self.size: int = entry.size
        self.dim: int = entry.dim
        self._session = session
        self._input_name = entry.input_name or session.get_inputs()[0].name
        outputs = [o.name for o in session.get_outputs()]
        if entry.output is not None and entry.output in outputs:
            self._output_name = entry.output
        else:
            self._output_name = outputs[entry.output_index or 0]
        input_shape = session.get_inputs()[0].shape
        self.fixed_batch = entry.batch == "fixed" or isinstance(input_shape[0], int)
        self._check_dim()

    @property
    def model_id(self) -> str:
        return self.entry.id

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def _check_dim(self) -> None:
        shape = next(o.shape for o in self._session.get_outputs() if o.name == self._output_name)
        if isinstance(shape[-1], int) and shape[-1] != self.dim:
            raise ValueError(f"{self.model_id}: graph output has dim {shape[-1]}, manifest says {self.dim}")

    def preprocess(self, crops_bgr: list[np.ndarray]) -> np.ndarray:
        """Stack BGR uint8 crops into the graph's input tensor (colour order, scaling, layout).

        The pixels are read in the graph's colour order and layout (views of the stacked crops) and
        written, converted and scaled, straight into the contiguous float32 tensor the session takes:
        the float32 arithmetic of `(x - mean) / std` on the converted pixels, bit for bit, without the
        three intermediate float copies of the batch it used to make.
        """
        batch = np.stack(crops_bgr)
        if batch.shape[1:3] != (self.size, self.size):
            raise ValueError(f"{self.model_id} expects {self.size}x{self.size} crops, got {batch.shape[1:3]}")
        if batch.dtype not in _EXACT_IN_FLOAT32:  # e.g. float64 crops: converted first, as before
            batch = batch.astype(np.float32)
        if self.entry.color == "RGB":
            batch = batch[..., ::-1]
        if self.entry.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        tensor = np.empty(batch.shape, dtype=np.float32)
        np.subtract(batch, np.float32(self.entry.mean), out=tensor)
        if self.entry.std != 1.0:
            np.divide(tensor, np.float32(self.entry.std), out=tensor)
        return tensor

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Raw graph outputs for a preprocessed batch; one face per run when the graph's batch is fixed."""
        start = time.perf_counter()
        if self.fixed_batch:
            rows = [self._session.run([self._output_name], {self._input_name: t[None]})[0] for t in tensor]
            out = np.concatenate(rows) if rows else np.empty((0, self.dim), np.float32)
        else:
            out = self._session.run([self._output_name], {self._input_name: tensor})[0]
        INFERENCE.labels(self.entry.id).observe(time.perf_counter() - start)
        return np.asarray(out, dtype=np.float32).reshape(len(tensor), -1)

    def embed(self, crops_bgr: list[np.ndarray], normalize: bool = True) -> np.ndarray:
        """Embeddings (n, dim) float32 for aligned crops; unit length unless `normalize` is False."""
        if not crops_bgr:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = self.run(self.preprocess(crops_bgr))
        return l2_normalize(vectors) if normalize else vectors
