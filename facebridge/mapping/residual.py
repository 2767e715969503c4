"""A regularised residual map: an affine map plus a small MLP on what the affine map leaves over.

y = x W + b + relu(x W1 + b1) W2 + b2. The affine part is the ridge map (closed form); the MLP starts
at zero (W2 = 0), so training can only move away from the affine solution where held-out people say
it helps: weight decay on both layers and early stopping on identities the MLP never trains on.
Fitting is numpy only (Adam on mini-batches), and so is serving: the four extra tensors are stored in
the map file beside W and b (`facebridge.mapping.mapfile`).

Two options aim at what verification uses rather than at the coordinates of B's embedding:
`similarity_weight` adds a term that keeps the cosine similarities between the mapped rows of a batch
equal to those of their targets (the geometry B decides with), and `cosine_weight` one that pulls
each mapped row's direction onto its target's. `members` fits that many MLPs on different validation
splits and seeds and averages them; the average of residual MLPs is again one residual MLP (hidden
layers side by side, output weights divided by the count), so an ensemble is an ordinary map file.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from facebridge.mapping.estimators import ParamsFromInit, RidgeMap, check_is_fitted, row_cosine
from facebridge.mapping.optim import Adam


def split_groups(
    groups: np.ndarray | None, n: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, validation); every group (identity) wholly on one side."""
    rng = np.random.default_rng(seed)
    if groups is None:
        held = np.zeros(n, bool)
        held[rng.permutation(n)[: max(1, round(n * fraction))]] = True
        return ~held, held
    names = np.unique(groups)
    chosen = set(rng.choice(names, size=max(1, round(len(names) * fraction)), replace=False).tolist())
    held = np.array([g in chosen for g in groups.tolist()])
    return ~held, held


class ResidualMLPMap(ParamsFromInit):
    """Ridge map plus a one-hidden-layer ReLU MLP on the residual, early-stopped on held-out people.

    `validation_fraction` of the identities are held out of the MLP's training to choose its epoch;
    the ridge part is fitted on the training identities too, so validation is honest for both.
    """

    method = "residual-mlp"

    def __init__(
        self,
        hidden: int = 256,
        weight_decay: float = 1e-3,
        learning_rate: float = 3e-3,
        batch_size: int = 1024,
        max_epochs: int = 60,
        patience: int = 4,
        validation_fraction: float = 0.15,
        random_state: int = 0,
        similarity_weight: float = 0.0,
        cosine_weight: float = 0.0,
        members: int = 1,
    ):
        self.hidden = hidden
        self.weight_decay = weight_decay
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.similarity_weight = similarity_weight
        self.cosine_weight = cosine_weight
        self.members = members

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Self:
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise ValueError(f"X {x.shape} and Y {y.shape} must be 2-D with the same rows")
        if self.members < 1:
            raise ValueError(f"members must be at least 1, not {self.members}")
        fits = [self._fit_one(x, y, groups, self.random_state + k) for k in range(self.members)]
        k = float(len(fits))
        self.alpha_ = fits[0]["alpha_"]
        self.coef_ = sum(f["coef_"] for f in fits) / k
        self.intercept_ = sum(f["intercept_"] for f in fits) / k
        self.in_weight_ = np.concatenate([f["in_weight_"] for f in fits], axis=1)
        self.in_bias_ = np.concatenate([f["in_bias_"] for f in fits])
        self.out_weight_ = np.concatenate([f["out_weight_"] for f in fits], axis=0) / k
        self.out_bias_ = sum(f["out_bias_"] for f in fits) / k
        self.best_epoch_ = int(np.median([f["best_epoch_"] for f in fits]))
        self.base_validation_cosine_ = float(np.mean([f["base_validation_cosine_"] for f in fits]))
        self.validation_cosine_ = float(np.mean([f["validation_cosine_"] for f in fits]))
        return self

    def _fit_one(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, seed: int) -> dict[str, Any]:
        """One member: its own validation identities and initialisation from `seed`."""
        train, held = split_groups(groups, len(x), self.validation_fraction, seed)
        base = RidgeMap(random_state=seed).fit(x[train], y[train], None if groups is None else groups[train])
        rng = np.random.default_rng(seed)
        # inputs are unit vectors: scale by sqrt(d) so the hidden layer sees unit-variance features
        gain = float(np.sqrt(x.shape[1]))
        xs = (x * gain).astype(np.float32)
        # residuals in standardised target units, scored by centred cosine: in spaces with a large
        # common component (dlib's) raw errors and raw cosines are dominated by it, not by identity
        centre = y[train].mean(axis=0)
        spread = np.maximum(y[train].std(axis=0), 1e-6)
        base_x = base.transform(x).astype(np.float32)
        residual = ((y - base_x) / spread).astype(np.float32)
        y32, spread_f = y.astype(np.float32), spread.astype(np.float32)
        w1 = (rng.normal(size=(x.shape[1], self.hidden)) * np.sqrt(2.0 / x.shape[1])).astype(np.float32)
        b1 = np.zeros(self.hidden, np.float32)
        w2 = np.zeros((self.hidden, y.shape[1]), np.float32)
        b2 = np.zeros(y.shape[1], np.float32)
        params = [w1, b1, w2, b2]
        adam = Adam(params, self.learning_rate, [self.weight_decay, 0.0, self.weight_decay, 0.0])
        base_held = base.transform(x[held]) - centre
        truth_held = y[held] - centre

        def held_cosine() -> float:
            hidden = np.maximum(xs[held] @ w1 + b1, 0)
            return float(row_cosine(base_held + (hidden @ w2 + b2) * spread, truth_held).mean())

        best = base_cosine = held_cosine()
        best_params = [p.copy() for p in params]
        best_epoch, stale = 0, 0
        rows = np.nonzero(train)[0]
        for epoch in range(1, self.max_epochs + 1):
            order = rows[rng.permutation(len(rows))]
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                xb, rb = xs[batch], residual[batch]
                pre = xb @ w1 + b1
                hidden = np.maximum(pre, 0)
                out = hidden @ w2 + b2
                err = (out - rb) * (2.0 / len(batch))
                if self.similarity_weight or self.cosine_weight:
                    err += self._geometry_grad(base_x[batch] + out * spread_f, y32[batch]) * spread_f
                g_w2 = hidden.T @ err
                g_b2 = err.sum(axis=0)
                g_hidden = (err @ w2.T) * (pre > 0)
                g_w1 = xb.T @ g_hidden
                g_b1 = g_hidden.sum(axis=0)
                adam.step([g_w1, g_b1, g_w2, g_b2])
            score = held_cosine()
            if score > best + 1e-5:
                best, best_epoch, stale = score, epoch, 0
                best_params = [p.copy() for p in params]
            else:
                stale += 1
                if stale >= self.patience:
                    break
        w1, b1, w2, b2 = best_params
        return {
            "alpha_": base.alpha_,
            "coef_": base.coef_,
            "intercept_": base.intercept_,
            "in_weight_": (w1 * gain).astype(np.float64),
            "in_bias_": b1.astype(np.float64),
            "out_weight_": w2.astype(np.float64) * spread,
            "out_bias_": b2.astype(np.float64) * spread,
            "best_epoch_": best_epoch,
            "base_validation_cosine_": base_cosine,
            "validation_cosine_": best,
        }

    def _geometry_grad(self, predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Gradient, with respect to the predicted rows, of the weighted geometry terms
        cosine_weight * mean_i (1 - cos(p_i, t_i))
        + similarity_weight * mean_ij (cos(p_i, p_j) - cos(t_i, t_j))^2."""
        norm = np.maximum(np.linalg.norm(predicted, axis=1, keepdims=True), 1e-6)
        u = predicted / norm
        v = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-6)
        n = len(u)
        grad_u = np.zeros_like(u)
        if self.cosine_weight:
            grad_u -= (self.cosine_weight / n) * v
        if self.similarity_weight:
            diff = u @ u.T - v @ v.T
            grad_u += (4.0 * self.similarity_weight / (n * n)) * (diff @ u)
        # through the normalisation: the radial part of the gradient does not change a direction
        grad_u -= np.sum(grad_u * u, axis=1, keepdims=True) * u
        return (grad_u / norm).astype(np.float32)

    def transform(self, x: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "in_weight_")
        x = np.asarray(x, np.float64)
        hidden = np.maximum(x @ self.in_weight_ + self.in_bias_, 0)
        return x @ self.coef_ + self.intercept_ + hidden @ self.out_weight_ + self.out_bias_
