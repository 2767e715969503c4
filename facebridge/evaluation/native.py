"""LFW verification of one recognizer in its own space (the baseline every map is measured against)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.lfw import Pair
from facebridge.evaluation.metrics import VerificationReport, verification_report


def pair_scores(cache: EmbeddingCache, pairs: list[Pair]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine similarity of each pair (embeddings are unit length), labels and folds."""
    left = cache.lookup(p.left for p in pairs)
    right = cache.lookup(p.right for p in pairs)
    scores = np.einsum("ij,ij->i", left, right)
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    return scores, labels, folds


def evaluate_native(cache: EmbeddingCache, pairs: list[Pair]) -> VerificationReport:
    return verification_report(*pair_scores(cache, pairs))


def format_report(model_id: str, report: VerificationReport, reference: float | None, misses: int) -> str:
    ref = f"{reference * 100:.2f}" if reference is not None else "-"
    return (
        f"{model_id:<20} acc {report.accuracy.mean * 100:6.2f} ± {report.accuracy.std * 100:4.2f}  "
        f"ref {ref:>6}  AUC {report.auc:.4f}  EER {report.eer * 100:5.2f}%  "
        f"TAR@FAR1e-3 {report.tar_at_far_1e3 * 100:6.2f}%  pairs {report.pairs}  no-face {misses}"
    )


def default_cache_path(cache_dir: Path, model_id: str, dataset: str = "lfw") -> Path:
    return cache_dir / f"{dataset}-{model_id}.npz"
