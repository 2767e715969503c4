"""A shared "hub" space whose identity targets are the vertices of a regular polytope.

Regular-polytope fixed classifiers put each class at a vertex of a d-simplex, d-orthoplex or d-cube:
the targets are fixed in advance and as far apart as the polytope allows. Used as a hub between face
models, each model gets one affine map into the polytope space, fitted from its own photos and their
identity labels alone: two models can be bridged with photos of the same people that are not the same
photos, and N models need N maps instead of N(N-1).

    hub = PolytopeHub("simplex").fit(identities_seen_by_any_model)
    to_hub_a = HubMap(hub).fit(embeddings_a, identities_a)
    to_hub_b = HubMap(hub).fit(embeddings_b, identities_b)   # other photos of (some of) the same people
    score = cosine(to_hub_a.transform(probe_a), to_hub_b.transform(template_b))
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np

from facebridge.mapping.estimators import AffineMapEstimator, RidgeMap

POLYTOPES = ("simplex", "orthoplex", "cube")


def polytope_dimension(kind: str, n_classes: int) -> int:
    """The smallest dimension whose polytope of that kind has at least `n_classes` vertices."""
    if n_classes < 2:
        raise ValueError("a polytope hub needs at least two classes")
    if kind == "simplex":
        return n_classes - 1
    if kind == "orthoplex":
        return math.ceil(n_classes / 2)
    if kind == "cube":
        return max(1, math.ceil(math.log2(n_classes)))
    raise ValueError(f"unknown polytope {kind!r}; choose from {', '.join(POLYTOPES)}")


def polytope_vertices(kind: str, n_classes: int) -> np.ndarray:
    """(n_classes, d) unit vertices of a regular polytope centred at the origin.

    simplex: d = K-1, every pair at cosine -1/(K-1) (the most separated K points possible);
    orthoplex: d = ceil(K/2), vertices ±e_i, pairs orthogonal or opposite;
    cube: d = ceil(log2 K), vertices in {-1, 1}^d / sqrt(d), nearest pairs at cosine 1 - 2/d.
    """
    d = polytope_dimension(kind, n_classes)
    if kind == "simplex":
        # centred one-hot vectors live in the (K-1)-dim subspace orthogonal to the all-ones vector;
        # in the Helmert basis of that subspace (rows (1,..,1,-k,0,..)/sqrt(k(k+1))) vertex i is
        # column i of the basis, so no factorisation is needed
        vertex = np.arange(n_classes)[:, None]
        k = np.arange(1, n_classes)[None, :]
        helmert = np.where(vertex < k, 1.0, np.where(vertex == k, -k, 0.0)) / np.sqrt(k * (k + 1.0))
        vertices: np.ndarray = np.asarray(helmert, dtype=np.float64)
    elif kind == "orthoplex":
        signed = np.vstack([np.eye(d), -np.eye(d)])
        order = np.arange(2 * d).reshape(2, d).T.reshape(-1)  # e_1, -e_1, e_2, -e_2, ...
        vertices = signed[order][:n_classes]
    else:
        codes = (np.arange(n_classes)[:, None] >> np.arange(d)[None, :]) & 1
        vertices = np.asarray((2.0 * codes - 1.0) / math.sqrt(d), dtype=np.float64)
    return vertices / np.linalg.norm(vertices, axis=1, keepdims=True)


class PolytopeHub:
    """Assigns every identity a vertex of the chosen polytope (sorted names, so any party agrees)."""

    def __init__(self, kind: str = "simplex"):
        self.kind = kind

    def fit(self, identities: np.ndarray) -> Self:
        self.classes_ = np.unique(np.asarray(identities).astype(str))
        self.vertices_ = polytope_vertices(self.kind, len(self.classes_))
        self.dim_ = self.vertices_.shape[1]
        return self

    def targets(self, identities: np.ndarray) -> np.ndarray:
        """Each row's identity vertex; identities the hub was not fitted on are refused."""
        names = np.asarray(identities).astype(str)
        index = np.searchsorted(self.classes_, names)
        index = np.minimum(index, len(self.classes_) - 1)
        unknown = self.classes_[index] != names
        if unknown.any():
            raise ValueError(f"{int(unknown.sum())} rows have identities the hub has no vertex for")
        return self.vertices_[index]


class HubMap(AffineMapEstimator):
    """An affine map from one model's embeddings into a polytope hub: ridge onto identity vertices.

    Only identity labels tie the rows to the hub, so each model's map can be fitted on its own photos.
    """

    method = "polytope-hub"

    def __init__(
        self, hub: PolytopeHub, alphas: tuple[float, ...] = (1e-3, 1e-2, 0.1, 1.0, 10.0), cv: int = 5
    ):
        self.hub = hub
        self.alphas = alphas
        self.cv = cv

    def get_params(self) -> dict[str, Any]:
        return {"polytope": self.hub.kind, "alphas": list(self.alphas), "cv": self.cv}

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Self:
        """`y` is the rows' identity labels (the hub's targets are derived from them)."""
        targets = self.hub.targets(y)
        ridge = RidgeMap(alphas=self.alphas, cv=self.cv).fit(x, targets, np.asarray(y))
        self.alpha_ = ridge.alpha_
        self.coef_, self.intercept_ = ridge.coef_, ridge.intercept_
        return self
