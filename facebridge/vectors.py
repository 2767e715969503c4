"""Turning caller embeddings into a checked float32 matrix, with errors that point at the bad row."""

from __future__ import annotations

from typing import Any

import numpy as np

from facebridge.exceptions import (
    BatchTooLarge,
    EmptyBatch,
    InvalidEmbedding,
    NonFinite,
    WrongDimension,
    ZeroVector,
)


def _invalid(field: str, message: str, kind: type[InvalidEmbedding] = InvalidEmbedding) -> InvalidEmbedding:
    return kind(f"{field}: {message}", field)


def check_matrix(matrix: np.ndarray, field: str, dim: int | None, max_rows: int) -> np.ndarray:
    """Shape, dim, finiteness and non-zero checks on an (n, d) matrix; names the first bad row."""
    if matrix.ndim != 2:
        raise _invalid(field, f"expected a 2-D array (n, dim), got shape {list(matrix.shape)}")
    if matrix.shape[0] == 0:
        raise _invalid(field, "empty batch: at least one embedding is required", EmptyBatch)
    if matrix.shape[0] > max_rows:
        raise BatchTooLarge(f"{field}: {matrix.shape[0]} embeddings; the limit is {max_rows}", field)
    if dim is not None and matrix.shape[1] != dim:
        raise _invalid(f"{field}[0]", f"has dim {matrix.shape[1]}, the space has dim {dim}", WrongDimension)
    # one pass, no (n, d) temporary: a row's sum of squares is NaN or Inf when the row holds a NaN or
    # an Inf (and, rarely, when huge finite values overflow it: those rows are looked at one by one)
    squares = np.einsum("ij,ij->i", matrix, matrix)
    suspect = ~np.isfinite(squares)
    if suspect.any():
        for index in np.flatnonzero(suspect):
            if not np.isfinite(matrix[index]).all():
                raise _invalid(f"{field}[{index}]", "contains NaN or Inf", NonFinite)
    if not (squares > 0).all():
        row = int(np.argmin(squares > 0))
        raise _invalid(f"{field}[{row}]", "is the zero vector (no direction to compare)", ZeroVector)
    return matrix


def parse_matrix(value: Any, field: str, dim: int | None, max_rows: int) -> np.ndarray:
    """A JSON list of equal-length number lists -> float32 (n, d).

    The fast path is one numpy conversion; only when it fails is the list walked to name the bad row.
    """
    if not isinstance(value, list):
        raise _invalid(field, "must be a list of embeddings (lists of numbers)")
    if len(value) > max_rows or not value:
        return check_matrix(np.empty((len(value), 0), np.float32), field, None, max_rows)
    try:
        matrix = np.array(value)
    except (ValueError, TypeError, OverflowError):
        matrix = None
    if matrix is None or matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
        raise _first_bad_row(value, field, dim)
    return check_matrix(matrix.astype(np.float32), field, dim, max_rows)


def _first_bad_row(value: list[Any], field: str, dim: int | None) -> InvalidEmbedding:
    expected = dim if dim is not None else (len(value[0]) if isinstance(value[0], list) else None)
    for index, row in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(row, list):
            return _invalid(where, "must be a list of numbers")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in row):
            return _invalid(where, "must contain only numbers")
        if expected is not None and len(row) != expected:
            return _invalid(where, f"has {len(row)} values, expected {expected}", WrongDimension)
    return _invalid(field, "must be a list of equal-length lists of numbers")
