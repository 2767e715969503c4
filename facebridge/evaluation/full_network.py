"""Full-network embeddings on LFW: verification with them, and mapping from them into another space.

Features of every layer are computed from the same aligned crops as the model's own embedding (one
graph run gives both), for every photo the embedding caches hold. Per LFW fold, the standardisation
statistics and the maps are fitted only on photos of people outside the fold, like every other study.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.linalg import solve
from tqdm import tqdm

from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.interchange import Metrics, PairedLfw, Scores, cosine_rows, summarise
from facebridge.linalg import l2_normalize
from facebridge.mapping.estimators import RidgeMap
from facebridge.progress import bar_disabled
from facebridge.vision.alignment import align_face
from facebridge.vision.full_network import FullNetworkEmbedding
from facebridge.vision.images import decode_image
from facebridge.vision.layer_features import LayerFeatureExtractor
from facebridge.vision.pipeline import FacePipeline

FNE = "full-network embedding"


def lfw_layer_features(
    pipeline: FacePipeline,
    root: Path,
    paths: list[str],
    landmarks: np.ndarray,
    model_id: str,
    out: Path,
    batch: int = 32,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(own embeddings, layer features, channels per layer) of every photo, one run per batch, cached
    in `out`."""
    recognizer = pipeline.registry.recognizer(model_id)
    if out.exists():
        with np.load(out, allow_pickle=False) as data:
            if list(data["paths"]) == paths and str(data["model_sha256"]) == recognizer.sha256:
                return (
                    np.asarray(data["embeddings"]),
                    np.asarray(data["features"]),
                    [int(c) for c in data["layer_channels"]],
                )
    template = pipeline.registry.manifest.templates[recognizer.entry.alignment or ""]
    extractor = LayerFeatureExtractor(pipeline.registry.model_path(model_id))
    embeddings, features = [], []
    for start in tqdm(
        range(0, len(paths), batch), desc=f"layers {model_id}", unit="batch", disable=bar_disabled(True)
    ):
        crops = []
        for rel, points in zip(paths[start : start + batch], landmarks[start : start + batch], strict=True):
            image = decode_image((root / rel).read_bytes(), max_bytes=1 << 30, max_pixels=1 << 28)
            if np.isnan(points).any():  # as the embedding caches do: the whole photo as the crop
                crops.append(
                    cv2.resize(image, (recognizer.size, recognizer.size), interpolation=cv2.INTER_AREA)
                )
            else:
                crops.append(align_face(image, points, template))
        tensor = recognizer.preprocess(crops)
        embeddings.append(l2_normalize(recognizer.run(tensor)))
        features.append(extractor(tensor))
    result = (
        np.concatenate(embeddings),
        np.concatenate(features),
        [layer.channels for layer in extractor.layers],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        paths=np.array(paths),
        model_sha256=np.array(recognizer.sha256),
        embeddings=result[0],
        features=result[1],
        layer_channels=np.array(result[2]),
    )
    return result


@dataclass
class FullNetworkStudy:
    source: str
    target: str
    feature_dim: int
    verification: dict[str, Metrics]  # own embedding, full-network embedding, standardised features
    cross: dict[str, Metrics]  # maps into the target's space from the own and full-network embeddings
    agreement: float  # cosine of the cache's embeddings with the ones recomputed here
    alpha: float  # relative ridge penalty of the full-network map


def wide_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with a bias for inputs with ~10k features, from the normal equations.

    The Gram matrix is built in float32 (exact for {-1, 0, 1} codes) and solved by Cholesky: several
    times cheaper than the SVD `RidgeMap` uses. `alpha` is relative to the mean diagonal of the Gram.
    """
    x32 = np.asarray(x, np.float32)
    mx, my = x32.mean(axis=0, dtype=np.float64), y.mean(axis=0)
    gram = (x32.T @ x32).astype(np.float64) - len(x) * np.outer(mx, mx)
    cross = x32.T.astype(np.float64) @ y - len(x) * np.outer(mx, my)
    gram[np.diag_indices_from(gram)] += alpha * max(float(np.trace(gram)) / len(gram), 1e-12)
    coef = np.asarray(solve(gram, cross, assume_a="pos"))
    return coef, my - mx @ coef


WIDE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0)


def choose_wide_alpha(x: np.ndarray, y: np.ndarray, validation: np.ndarray) -> float:
    """The penalty whose map gives the highest mean cosine on the `validation` rows."""
    best, best_score = WIDE_ALPHAS[0], -np.inf
    for alpha in WIDE_ALPHAS:
        coef, intercept = wide_ridge(x[~validation], y[~validation], alpha)
        score = float(cosine_rows(x[validation] @ coef + intercept, y[validation]).mean())
        if score > best_score:
            best, best_score = alpha, score
    return best


def study_full_network(
    data: PairedLfw,
    features: np.ndarray,
    embeddings: np.ndarray,
    log: Callable[[str], None] = print,
) -> FullNetworkStudy:
    """`data` pairs model A (whose layer `features` these are, rows aligned) with model B.

    Verification: A's own embedding, its full-network embedding and the standardised features before
    discretisation. Cross: ridge maps into B's space from A's own embedding and from the full-network
    embedding. Per fold, statistics and maps come from the other folds' people only; the map penalty
    is chosen once, inside the first fold's fitting people (two folds' people as validation).
    """
    verification = {n: Scores(np.zeros(len(data.labels))) for n in ("own embedding", FNE, "standardised")}
    cross = {n: Scores(np.zeros(len(data.labels))) for n in ("own embedding", FNE)}
    alpha: float | None = None
    for fold in data.fold_ids:
        fit, rows = data.fit_rows(fold), data.test_rows(fold)
        in_fold = data.folds == fold
        fne = FullNetworkEmbedding().fit(features[fit])
        codes = fne.transform(features).astype(np.float32)
        representations = {"own embedding": embeddings, FNE: codes, "standardised": fne.standardise(features)}
        for name, x in representations.items():
            verification[name].pairs[in_fold] = cosine_rows(x[data.left[in_fold]], x[data.right[in_fold]])
            unit = l2_normalize(np.asarray(x[rows], np.float64))
            verification[name].add_all_vs_all(unit @ unit.T, data.identities[rows], symmetric=True)
        own = RidgeMap().fit(embeddings[fit], data.b[fit], data.identities[fit])
        if alpha is None:
            other = next(f for f in data.fold_ids if f != fold)
            alpha = choose_wide_alpha(codes[fit], data.b[fit], data.row_fold[fit] == other)
            log(f"full-network map penalty {alpha}")
        coef, intercept = wide_ridge(codes[fit], data.b[fit], alpha)
        test_rows = np.nonzero(rows)[0]
        for name, (left, predicted) in {
            "own embedding": (own.transform(embeddings[data.left[in_fold]]), own.transform(embeddings[rows])),
            FNE: (codes[data.left[in_fold]] @ coef + intercept, codes[test_rows] @ coef + intercept),
        }.items():
            mapped = l2_normalize(left)
            cross[name].pairs[in_fold] = cosine_rows(mapped, data.b[data.right[in_fold]])
            predicted = l2_normalize(predicted)
            cross[name].add_all_vs_all(predicted @ data.b[rows].T, data.identities[rows], symmetric=False)
        log(f"{data.source}: fold {fold} done")
    return FullNetworkStudy(
        data.source,
        data.target,
        features.shape[1],
        {k: summarise(v, data.labels, data.folds) for k, v in verification.items()},
        {k: summarise(v, data.labels, data.folds) for k, v in cross.items()},
        float(cosine_rows(embeddings, data.a).mean()),
        float(alpha or 0.0),
    )


def full_network_markdown(studies: list[FullNetworkStudy], command: str) -> str:
    lines = [
        "## Full-network embedding",
        "",
        "Every Conv layer's activated output (and every Gemm) spatially averaged, standardised per "
        "feature with statistics from photos of people outside the tested fold, discretised to {-1, 0, 1} "
        "at -0.25 / 0.15; compared by cosine. *standardised*: the same features before discretisation. "
        "Cross: ridge maps from A's own embedding and from its full-network embedding into B's own "
        "embedding space (fitted per fold on other people), the mapped A photo against the native B photo.",
        "",
        f"    {command}",
        "",
    ]
    for s in studies:
        lines += [
            f"### {s.source} ({s.feature_dim:,} layer features) → {s.target}",
            "",
            "| representation of A | verification accuracy (%) | AUC | TAR@FAR=1e-3 (%) "
            f"| cross accuracy into {s.target} (%) | cross AUC | cross TAR@FAR=1e-3 (%) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, v in s.verification.items():
            c = s.cross.get(name)
            mapped = "n/a | n/a | n/a"
            if c is not None:
                mapped = f"{c.accuracy * 100:.2f} ± {c.accuracy_std * 100:.2f} | {c.auc:.4f} "
                mapped += f"| {c.tar_far_1e3 * 100:.2f}"
            lines.append(
                f"| {name} | {v.accuracy * 100:.2f} ± {v.accuracy_std * 100:.2f} | {v.auc:.4f} "
                f"| {v.tar_far_1e3 * 100:.2f} | {mapped} |"
            )
        lines += [
            "",
            f"Own embeddings recomputed from the same crops agree with the cached ones (mean cosine "
            f"{s.agreement:.4f}); full-network map penalty {s.alpha:g} (relative to the mean Gram diagonal).",
            "",
        ]
    return "\n".join(lines)


def paired_paths(source: EmbeddingCache, target: EmbeddingCache) -> list[str]:
    """The row order `paired_lfw` uses for these caches."""
    target_index = target.index()
    return sorted(p for p in source.index() if p in target_index)
