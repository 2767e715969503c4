"""Full-network embedding: every layer's pooled features, standardised, discretised to {-1, 0, 1}.

Features of all layers (not only the last) carry the generic, lower-level information a final
embedding discards. Standardising each feature over a dataset makes them comparable; discretising
(below `low` → -1, above `high` → 1, else 0) keeps only whether a feature is unusually present or
absent in an image, which removes most of the noise of the raw activations.

    fne = FullNetworkEmbedding().fit(layer_features_of_a_dataset)
    codes = fne.transform(layer_features)            # (n, total channels) int8 in {-1, 0, 1}

Statistics are stored with the model's sha256 so they are never applied to other weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import numpy as np

LOW, HIGH = -0.25, 0.15


class FullNetworkEmbedding:
    """Per-feature standardisation fitted on a dataset, then ternary discretisation."""

    def __init__(self, low: float = LOW, high: float = HIGH):
        if not low < high:
            raise ValueError("the low threshold must be below the high one")
        self.low = low
        self.high = high

    def fit(self, features: np.ndarray) -> Self:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError("fit needs a 2-D array of at least two rows")
        self.mean_ = features.mean(axis=0)
        std = features.std(axis=0)
        # a feature constant over the dataset carries nothing: it standardises to 0 and so codes to 0
        self.scale_ = np.where(std > 1e-12, std, np.inf)
        self.n_features_in_ = features.shape[1]
        return self

    def standardise(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.n_features_in_:
            raise ValueError(f"expected (n, {self.n_features_in_}) features, got {features.shape}")
        return (features - self.mean_) / self.scale_

    def transform(self, features: np.ndarray) -> np.ndarray:
        z = self.standardise(features)
        return ((z > self.high).astype(np.int8) - (z < self.low).astype(np.int8)).astype(np.int8)

    def get_params(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}

    def save(self, path: Path, model_id: str, model_sha256: str, layers: list[dict[str, Any]]) -> None:
        meta = {"model": model_id, "model_sha256": model_sha256, **self.get_params(), "layers": layers}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), mean=self.mean_, scale=self.scale_)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, model_sha256: str | None = None) -> tuple[FullNetworkEmbedding, dict[str, Any]]:
        """Statistics and their metadata; refused when they were fitted on other weights."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            fne = cls(meta["low"], meta["high"])
            fne.mean_, fne.scale_ = data["mean"], data["scale"]
        if model_sha256 is not None and meta["model_sha256"] != model_sha256:
            raise ValueError(
                f"{path}: fitted on weights {meta['model_sha256'][:12]}…, not {model_sha256[:12]}…"
            )
        fne.n_features_in_ = len(fne.mean_)
        return fne, meta


class FullNetworkModel:
    """A recognizer's full-network embedding as a service mode: layer extractor plus stored statistics."""

    def __init__(self, model_path: Path, stats_path: Path, model_sha256: str, providers: list[str]):
        from facebridge.vision.layer_features import LayerFeatureExtractor

        self.transform, self.meta = FullNetworkEmbedding.load(stats_path, model_sha256)
        self.extractor = LayerFeatureExtractor(model_path, providers)

    def codes(self, tensor: np.ndarray) -> np.ndarray:
        """{-1, 0, 1} codes for a batch already preprocessed for the recognizer."""
        features = self.extractor(tensor)
        if features.shape[1] != self.transform.n_features_in_:
            raise ValueError(
                f"the graph gives {features.shape[1]} layer features; the statistics have "
                f"{self.transform.n_features_in_}"
            )
        return self.transform.transform(features)


def stats_path(mappings_dir: Path, model_id: str) -> Path:
    """Where a model's full-network statistics live: beside the maps, one file per model."""
    return mappings_dir / "full-network" / f"{model_id}.npz"
