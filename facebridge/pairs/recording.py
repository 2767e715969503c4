"""Template pairs as the pair store keeps them, from what a request carries: POST /pairs sends pairs of
templates, /embed with `record` embeds one photo with two models. Both become the same checked rows:
each template of its model's dimension, finite and non-zero, and tied to the weight sha256 its model
pins, since a pair is only worth refitting from with the exact weights that made it. Errors name the
field at fault, as every library error does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from facebridge.exceptions import (
    ModelNotReady,
    NonFinite,
    SameSpace,
    UnknownModel,
    WrongDimension,
    ZeroVector,
)
from facebridge.pairs.rows import PairRow
from facebridge.schemas.embed import EmbedOptions, EmbedResponse
from facebridge.schemas.pairs import PairIn

if TYPE_CHECKING:
    from facebridge.bridge import Bridge


def template_space(bridge: Bridge, model: str, where: str) -> tuple[int, str]:
    """(dimension, weight sha256) of a model's templates: its manifest entry and pin, else the space
    the mapping bank pins for it."""
    registry = bridge.pipeline.registry if bridge.pipeline is not None else None
    status = registry.status.get(model) if registry is not None else None
    space = bridge.bank.spaces.get(model)
    if status is None and space is None:
        raise UnknownModel(f"{where}: no model or space {model!r}", where)
    dim, sha256 = None, None
    if status is not None:
        if status.entry.kind != "recognizer":
            raise ModelNotReady(f"{where}: {model} is a {status.entry.kind}, not a recognizer", where)
        dim, sha256 = status.entry.dim, status.entry.sha256 or status.sha256
    if space is not None:
        dim, sha256 = dim or space.dim, sha256 or space.sha256
    if dim is None or sha256 is None:
        raise ModelNotReady(
            f"{where}: {model} has no sha256 pinned in the manifest (and no file here to hash): "
            "pairs are recorded only with the exact weights that made them",
            where,
        )
    return dim, sha256


def checked_template(values: Sequence[float], dim: int, where: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    if vector.shape != (dim,):
        raise WrongDimension(f"{where}: has {len(vector)} values, the model's templates have {dim}", where)
    if not np.isfinite(vector).all():
        raise NonFinite(f"{where}: contains NaN or Inf (or a value beyond float32)", where)
    if not vector.any():
        raise ZeroVector(f"{where}: is the zero vector", where)
    return vector


def rows_of_pairs(bridge: Bridge, pairs: Sequence[PairIn]) -> list[PairRow]:
    """The rows to store, every pair checked first (errors name the field, e.g. pairs[3].b.embedding)."""
    spaces: dict[str, tuple[int, str]] = {}
    rows = []
    for index, pair in enumerate(pairs):
        sides = []
        for name, side in (("a", pair.a), ("b", pair.b)):
            where = f"pairs[{index}].{name}"
            if side.model not in spaces:
                spaces[side.model] = template_space(bridge, side.model, f"{where}.model")
            dim, sha256 = spaces[side.model]
            sides.append((side.model, sha256, checked_template(side.embedding, dim, f"{where}.embedding")))
        if pair.a.model == pair.b.model:
            where = f"pairs[{index}].b.model"
            raise SameSpace(f"{where}: a and b are both {pair.a.model}; a pair needs two models", where)
        (model_a, sha_a, vector_a), (model_b, sha_b, vector_b) = sides
        rows.append(PairRow(pair.subject, model_a, sha_a, vector_a, model_b, sha_b, vector_b))
    return rows


def rows_of_embedding(response: EmbedResponse, options: EmbedOptions) -> list[PairRow]:
    """One pair per image of an /embed answer made with `record`: its one face through both models."""
    assert options.record is not None and options.models is not None and len(options.models) == 2
    model_a, model_b = options.models
    rows = []
    for result in response.results:
        for face in result.faces[:1]:  # largest_only / aligned: one face per image
            by_model = {e.model: e for e in face.embeddings}
            a, b = by_model[model_a], by_model[model_b]
            rows.append(
                PairRow(
                    options.record.subject,
                    a.model,
                    a.sha256,
                    np.asarray(a.embedding, np.float32),
                    b.model,
                    b.sha256,
                    np.asarray(b.embedding, np.float32),
                )
            )
    return rows
