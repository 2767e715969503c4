"""Each operation described once as a `_Call`: what to send and how to read a successful answer;
the sync and async clients share them."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import httpx
import numpy as np
import orjson
import pydantic

from facebridge.schemas.calibration import CalibrationReport
from facebridge.schemas.catalog import MappingList, ModelList, ReloadAnswer
from facebridge.schemas.embed import EmbedResponse
from facebridge.schemas.pairs import PairsDeleted, PairsRecorded, PairStatsResponse
from facebridge.schemas.translate import TranslateResponse
from facebridge.schemas.verify import Pair, Side, VerifyResponse

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""30 s to read an answer (a batch of photos on CPU takes seconds), 5 s to connect (a dead host)."""

BINARY_ROWS = 256
"""translate() switches to the .npy body above this many rows: JSON costs ~50x more per row."""

NPY = "application/x-npy"

OperatingPoint: TypeAlias = Literal["far_1e-2", "far_1e-3", "far_1e-4", "max_accuracy"]
Normalization: TypeAlias = Literal["auto", "none"]  # "none": raw cosine even where a cohort is loaded
ImageInput: TypeAlias = bytes | bytearray | memoryview | os.PathLike[str]
"""A photo: its encoded bytes (JPEG, PNG, …) or the path of its file."""
SideInput: TypeAlias = np.ndarray | Sequence[float] | ImageInput
"""One face of a pair: a template (1-D vector) or a photo for the service to embed."""
PairInput: TypeAlias = (
    Pair
    | tuple[Side | tuple[str, SideInput], Side | tuple[str, SideInput]]
    | tuple[SideInput, str, SideInput, str]
)
"""A Pair; ((model, data), (model, data)) as in facebridge.bridge; or (a, a_model, b, b_model) as verify()."""

T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One operation, transport-free: what to send, and how to read the answer that succeeded."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] | None = None
    content: bytes | None = None
    content_type: str | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] | None = None
    answers: frozenset[int] = frozenset()  # error statuses whose body is the answer (503 of /readyz)
    retry: bool = True


@dataclass(frozen=True)
class TranslationResult:
    """Translated rows as float32 (n, d_target), whichever wire format carried them.

    `response` is the service's full JSON answer (with each map's quality figures); it is None when the
    binary .npy path was used, which carries only the map ids. `confidence` (float32 (n,)): each row's
    expected cosine with the target model's own embedding of the photo; None when a map of the path has
    no predictor, or on the binary path unless asked for (`confidence=True`).
    """

    source: str
    target: str
    embeddings: np.ndarray = field(repr=False)
    maps: list[str]
    composed: bool
    response: TranslateResponse | None = field(default=None, repr=False)
    confidence: np.ndarray | None = field(default=None, repr=False)


def _model(cls: type[pydantic.BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda response: cls.model_validate_json(response.content)


def _json_body(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def _health_call() -> _Call[bool]:
    return _Call("GET", "/healthz", lambda r: r.json().get("status") == "ok", retry=False)


def _ready_call() -> _Call[dict[str, Any]]:
    return _Call("GET", "/readyz", lambda r: dict(r.json()), answers=frozenset({503}))


def _models_call() -> _Call[ModelList]:
    return _Call("GET", "/models", _model(ModelList))


def _mappings_call() -> _Call[MappingList]:
    return _Call("GET", "/mappings", _model(MappingList))


def _calibration_call() -> _Call[CalibrationReport]:
    return _Call("GET", "/calibration", _model(CalibrationReport))


def _reload_call() -> _Call[ReloadAnswer]:
    return _Call("POST", "/admin/reload-mappings", _model(ReloadAnswer))


def _record_pairs_call(pairs: Sequence[tuple[str, tuple[str, Any], tuple[str, Any]]]) -> _Call[PairsRecorded]:
    body = {
        "pairs": [
            {
                "subject": subject,
                "a": {"model": a_model, "embedding": np.asarray(a, np.float32).tolist()},
                "b": {"model": b_model, "embedding": np.asarray(b, np.float32).tolist()},
            }
            for subject, (a_model, a), (b_model, b) in pairs
        ]
    }
    return _Call(
        "POST", "/pairs", _model(PairsRecorded), content=_json_body(body), content_type="application/json"
    )


def _erase_call(subject: str) -> _Call[PairsDeleted]:
    return _Call("DELETE", "/pairs", _model(PairsDeleted), params={"subject": subject})


def _pair_stats_call() -> _Call[PairStatsResponse]:
    return _Call("GET", "/pairs/stats", _model(PairStatsResponse))


def _read_image(value: ImageInput, index: int) -> tuple[str, bytes, str]:
    if isinstance(value, os.PathLike):
        path = Path(value)
        return path.name, path.read_bytes(), "application/octet-stream"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"image-{index}", bytes(value), "application/octet-stream"
    raise TypeError(f"images[{index}]: pass photo bytes or a Path, not {type(value).__name__}")


def _image_batch(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, bytes | bytearray | memoryview | os.PathLike):
        return [images]
    return list(images)


def _form_value(value: bool | int | float | str) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _embed_call(
    images: ImageInput | Sequence[ImageInput] | np.ndarray,
    models: Sequence[str] | None,
    options: dict[str, Any],
    channels: Literal["bgr", "rgb"] | None = None,
) -> _Call[EmbedResponse]:
    if isinstance(images, str):
        raise TypeError("images: pass photo bytes or a Path (a str is ambiguous)")
    data = {k: _form_value(v) for k, v in options.items() if v is not None}
    if models:
        data["models"] = models if isinstance(models, str) else ",".join(models)
    if isinstance(images, np.ndarray):  # pixels: a .npy body, the options in the query string
        if channels not in ("bgr", "rgb"):
            raise TypeError("images as an array: say its colour order, channels='bgr' or 'rgb'")
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(images, dtype=np.uint8), allow_pickle=False)
        return _Call(
            "POST",
            "/embed",
            _model(EmbedResponse),
            params={**data, "channels": channels},
            content=buffer.getvalue(),
            content_type=NPY,
        )
    files = [("images", _read_image(image, i)) for i, image in enumerate(_image_batch(images))]
    return _Call("POST", "/embed", _model(EmbedResponse), files=files, data=data)


def _translate_call(
    embeddings: np.ndarray | Sequence[Sequence[float]],
    source: str,
    target: str,
    binary: bool | None,
    confidence: bool = False,
) -> _Call[TranslationResult]:
    rows = len(embeddings)
    if binary or (binary is None and rows > BINARY_ROWS):
        matrix = np.ascontiguousarray(embeddings, dtype="<f4")
        buffer = io.BytesIO()
        np.save(buffer, matrix, allow_pickle=False)

        def parse_npy(response: httpx.Response) -> TranslationResult:
            expected = None
            if confidence:  # an .npz of `embeddings` and `confidence`
                with np.load(io.BytesIO(response.content), allow_pickle=False) as npz:
                    out, expected = npz["embeddings"], npz["confidence"]
            else:
                out = np.load(io.BytesIO(response.content), allow_pickle=False)
            maps = [m for m in response.headers.get("x-facebridge-maps", "").split(",") if m]
            composed = response.headers.get("x-facebridge-composed", "").lower() == "true"
            return TranslationResult(
                source, target, out.astype(np.float32, copy=False), maps, composed, None, expected
            )

        return _Call(
            "POST",
            "/translate",
            parse_npy,
            params={"source": source, "target": target, **({"confidence": "true"} if confidence else {})},
            content=buffer.getvalue(),
            content_type=NPY,
        )

    rows_json: Any = embeddings
    if isinstance(embeddings, np.ndarray):  # orjson writes float32 and float64 arrays without a Python list
        rows_json = np.ascontiguousarray(
            embeddings, dtype=np.float64 if embeddings.dtype == np.float64 else "<f4"
        )

    def parse_json(response: httpx.Response) -> TranslationResult:
        answer = TranslateResponse.model_validate_json(response.content)
        out = np.asarray(answer.embeddings, dtype=np.float32)
        expected = np.asarray(answer.confidence, np.float32) if answer.confidence is not None else None
        return TranslationResult(
            answer.source, answer.target, out, [m.id for m in answer.maps], answer.composed, answer, expected
        )

    body = _json_body({"source": source, "target": target, "embeddings": rows_json})
    return _Call("POST", "/translate", parse_json, content=body, content_type="application/json")


def _side(model: str, value: SideInput) -> dict[str, Any]:
    """A side as the service reads it: photos go as base64 `image`, anything else as an `embedding`."""
    if isinstance(value, os.PathLike):
        value = Path(value).read_bytes()
    if isinstance(value, bytes | bytearray | memoryview):
        return {"model": model, "image": base64.b64encode(bytes(value)).decode("ascii")}
    vector = np.asarray(value, dtype=np.float64)
    if vector.ndim != 1:
        raise ValueError(f"an embedding is one vector; got shape {vector.shape}")
    return {"model": model, "embedding": vector.tolist()}


def _side_of(value: Side | tuple[str, SideInput]) -> dict[str, Any]:
    if isinstance(value, Side):
        return value.model_dump(exclude_none=True)
    return _side(value[0], value[1])


def _pair(pair: PairInput) -> dict[str, Any]:
    if isinstance(pair, Pair):
        return pair.model_dump(exclude_none=True)
    if len(pair) == 4:
        a, a_model, b, b_model = pair
        return {"a": _side(str(a_model), a), "b": _side(str(b_model), b)}
    if len(pair) == 2:
        return {"a": _side_of(pair[0]), "b": _side_of(pair[1])}
    raise ValueError("a pair is a Pair, ((model, a), (model, b)) or (a, a_model, b, b_model)")


def _verify_call(
    pairs: list[dict[str, Any]],
    single: bool,
    far: float | None,
    operating_point: OperatingPoint | None,
    threshold: float | None,
    space: str | None,
    normalization: Normalization | None = None,
) -> _Call[VerifyResponse]:
    body: dict[str, Any] = {"pair": pairs[0]} if single else {"pairs": pairs}
    rule = {
        "far": far,
        "operating_point": operating_point,
        "threshold": threshold,
        "space": space,
        "normalization": normalization,
    }
    body.update({k: v for k, v in rule.items() if v is not None})
    return _Call(
        "POST", "/verify", _model(VerifyResponse), content=_json_body(body), content_type="application/json"
    )
