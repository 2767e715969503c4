"""Row-wise vector helpers shared by serving, fitting and studies (numpy only, no model runtime)."""

from __future__ import annotations

import numpy as np


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise unit length; a zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


# a comparison through both maps joins each side's rows in the two spaces; scaled by 1/sqrt(2) the
# joined rows stay unit length and their dot product is the mean of the two cosines
BOTH_MAPS_SCALE = np.float32(1 / np.sqrt(2))
