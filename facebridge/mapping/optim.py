"""Adam for the numpy fits (the residual MLP's, the identity-softmax map's): no deep-learning framework
is a dependency, and both need only a few thousand small steps."""

from __future__ import annotations

import numpy as np


class Adam:
    """Adam with decoupled weight decay (AdamW) over a list of float32 arrays, updated in place."""

    def __init__(
        self, params: list[np.ndarray], learning_rate: float, weight_decay: list[float] | None = None
    ):
        self.params = params
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay or [0.0] * len(params)
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        for p, g, m, v, wd in zip(self.params, grads, self.m, self.v, self.weight_decay, strict=True):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= self.learning_rate * ((m / c1) / (np.sqrt(v / c2) + 1e-8) + wd * p)
