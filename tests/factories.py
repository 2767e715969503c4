"""Synthetic data shared by tests: one builder for each kind of thing, instead of a copy per file."""

from __future__ import annotations

import numpy as np


def unit_rows(
    n: int, dim: int, seed: int | np.random.Generator, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """`n` random unit vectors of `dim` (rows of a Gaussian, L2-normalised): templates as a model's space
    holds them. `seed` is a seed or a generator a test keeps drawing from."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rows = rng.normal(size=(n, dim)).astype(dtype)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)
