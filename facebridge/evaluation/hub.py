"""Bridging two models through a polytope hub, measured on LFW next to direct and model-space bridges.

Every bridge turns a probe embedded by A and a template embedded by B into two vectors of one space and
scores them by cosine ("cross" accuracy, the 10-fold protocol of the interchangeability study, with maps
fitted only on people outside the tested fold). Bridges compared:

- direct (same photos): ridge A→B on photos embedded by both models, the bank's way;
- direct (other photos): ridge from A's photos to B's identity centroids taken over B's own, different
  photos, the best a direct map can do without corresponding photos;
- through C's space: A→C and B→C ridge maps, compared in C (a model space used as the hub);
- composed A→C→B: two ridge maps applied in turn, compared in B (what the bank does for a missing map);
- polytope hub (simplex / orthoplex / cube), other photos: A's map fitted on one half of each person's
  photos, B's on the other half, linked only by identity labels; and the simplex hub on the same photos,
  to separate the cost of disjoint photos from the cost of the hub.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facebridge.evaluation.interchange import (
    Metrics,
    PairedLfw,
    Scores,
    centroid_targets,
    cosine_rows,
    summarise,
)
from facebridge.linalg import l2_normalize
from facebridge.mapping.estimators import RidgeMap
from facebridge.mapping.polytope import POLYTOPES, HubMap, PolytopeHub

Transform = Callable[[np.ndarray], np.ndarray]


def photo_sides(identities: np.ndarray) -> np.ndarray:
    """0 or 1 per row: alternate photos of each person; people with one photo alternate by name.

    A's maps are fitted on side 0 and B's on side 1, so the two never share a photo.
    """
    _, inverse, counts = np.unique(identities, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    rank = np.empty(len(identities), int)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank[order] = np.arange(len(identities)) - np.repeat(starts, counts)
    single = counts[inverse] == 1
    return np.where(single, inverse % 2, rank % 2)


def _ridge(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Transform:
    return RidgeMap().fit(x, y, groups).transform


def _identity(x: np.ndarray) -> np.ndarray:
    return x


@dataclass
class BridgeRow:
    name: str
    photos: str  # "same" or "other"
    maps: str  # affine maps needed to bridge N models both ways, as a formula
    metrics: Metrics


@dataclass
class HubStudy:
    source: str
    target: str
    via: str
    rows: list[BridgeRow]
    hub_dims: dict[str, int]


def _bridge_scores(data: PairedLfw, build: Callable[[np.ndarray], tuple[Transform, Transform]]) -> Scores:
    """Cross scores of a bridge whose (probe, template) transforms are built per fold from fit rows."""
    scores = Scores(np.zeros(len(data.labels)))
    for fold in data.fold_ids:
        probe, template = build(data.fit_rows(fold))
        in_fold = data.folds == fold
        left = l2_normalize(probe(data.a[data.left[in_fold]]))
        right = l2_normalize(template(data.b[data.right[in_fold]]))
        scores.pairs[in_fold] = cosine_rows(left, right)
        rows = data.test_rows(fold)
        matrix = l2_normalize(probe(data.a[rows])) @ l2_normalize(template(data.b[rows])).T
        scores.add_all_vs_all(matrix, data.identities[rows], symmetric=False)
    return scores


def study_hub(
    data: PairedLfw,
    via: PairedLfw,
    polytopes: tuple[str, ...] = POLYTOPES,
    log: Callable[[str], None] = print,
) -> HubStudy:
    """`data` pairs A with B; `via` pairs A with a third model C over the same rows."""
    if not np.array_equal(data.identities, via.identities) or data.source != via.source:
        raise ValueError("the pivot pairing must be the same photos, with A as its source")
    a, b, c, ids = data.a, data.b, via.b, data.identities
    side = photo_sides(ids)
    dims: dict[str, int] = {}

    def direct_same(fit: np.ndarray) -> tuple[Transform, Transform]:
        return _ridge(a[fit], b[fit], ids[fit]), _identity

    def direct_other(fit: np.ndarray) -> tuple[Transform, Transform]:
        probe_rows, template_rows = fit & (side == 0), fit & (side == 1)
        shared = np.intersect1d(ids[probe_rows], ids[template_rows])
        probe_rows &= np.isin(ids, shared)
        template_rows &= np.isin(ids, shared)
        # each person's centroid over B's own (other) photos is the target of A's photos of them
        centroid_of = dict(zip(*_centroids(b[template_rows], ids[template_rows]), strict=True))
        targets = np.stack([centroid_of[name] for name in ids[probe_rows]])
        return _ridge(a[probe_rows], targets, ids[probe_rows]), _identity

    def through_c(fit: np.ndarray) -> tuple[Transform, Transform]:
        return _ridge(a[fit], c[fit], ids[fit]), _ridge(b[fit], c[fit], ids[fit])

    def composed(fit: np.ndarray) -> tuple[Transform, Transform]:
        a_to_c, c_to_b = _ridge(a[fit], c[fit], ids[fit]), _ridge(c[fit], b[fit], ids[fit])
        return (lambda x: c_to_b(a_to_c(x))), _identity

    def hub(kind: str, disjoint: bool) -> Callable[[np.ndarray], tuple[Transform, Transform]]:
        def build(fit: np.ndarray) -> tuple[Transform, Transform]:
            probe_rows = fit & (side == 0) if disjoint else fit
            template_rows = fit & (side == 1) if disjoint else fit
            polytope = PolytopeHub(kind).fit(ids[probe_rows | template_rows])
            dims[kind] = polytope.dim_
            to_hub_a = HubMap(polytope).fit(a[probe_rows], ids[probe_rows])
            to_hub_b = HubMap(polytope).fit(b[template_rows], ids[template_rows])
            return to_hub_a.transform, to_hub_b.transform

        return build

    bridges: list[tuple[str, str, str, Callable[[np.ndarray], tuple[Transform, Transform]]]] = [
        ("direct A→B", "same", "N(N-1)", direct_same),
        ("direct A→B, identity centroids", "other", "N(N-1)", direct_other),
        (f"through {via.target}'s space", "same", "N-1", through_c),
        (f"composed A→{via.target}→B", "same", "2(N-1)", composed),
        *[(f"{kind} hub", "other", "N", hub(kind, True)) for kind in polytopes],
        *([("simplex hub", "same", "N", hub("simplex", False))] if "simplex" in polytopes else []),
    ]
    rows = []
    for name, photos, maps, build in bridges:
        metrics = summarise(_bridge_scores(data, build), data.labels, data.folds)
        rows.append(BridgeRow(name, photos, maps, metrics))
        log(f"{data.source}→{data.target} {name} ({photos} photos): cross {metrics.accuracy:.4f}")
    return HubStudy(data.source, data.target, via.target, rows, dims)


def _centroids(y: np.ndarray, identities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names, first = np.unique(identities, return_index=True)
    return names, centroid_targets(y, identities)[first]


def hub_markdown(studies: list[HubStudy], natives: dict[str, Metrics], command: str) -> str:
    """The report section: one table per model pair."""
    lines = [
        "## Polytope hub space",
        "",
        "Cross accuracy (A's probe against B's template) through each bridge; maps are fitted per LFW "
        "fold on people outside it. \"other\" photos: A's and B's maps never see the same photo (each "
        "person's photos alternate between the two models). The maps column counts affine maps needed to "
        "bridge N models both ways.",
        "",
        f"    {command}",
        "",
    ]
    for study in studies:
        dims = ", ".join(f"{k} d={v}" for k, v in sorted(study.hub_dims.items()))
        lines += [
            f"### {study.source} → {study.target} (native {natives[study.source].accuracy * 100:.2f} / "
            f"{natives[study.target].accuracy * 100:.2f}; hubs: {dims})",
            "",
            "| bridge | photos | maps for N models | cross accuracy (%) | AUC | EER (%) | TAR@FAR=1e-3 (%) |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for row in study.rows:
            m = row.metrics
            lines.append(
                f"| {row.name} | {row.photos} | {row.maps} "
                f"| {m.accuracy * 100:.2f} ± {m.accuracy_std * 100:.2f} | {m.auc:.4f} "
                f"| {m.eer * 100:.2f} | {m.tar_far_1e3 * 100:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)
