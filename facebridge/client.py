"""Typed HTTP client for the facebridge service: `Client` (blocking) and `AsyncClient` (asyncio).

Both run the same core: every operation is first described as a `_Call` (what to send, how to read a
successful answer), and one `_Core` decides after each attempt whether to wait and try again, turns
problem+json answers into typed exceptions and parses the rest into the pydantic models of
facebridge.schemas. The two classes differ only in how they send a request and how they sleep.

    with Client("http://localhost:8000", api_key="…") as fb:
        moved = fb.translate(templates, "arcface-mbf128", "sirius-mbf192")
        answer = fb.verify(moved.embeddings[0], "sirius-mbf192", probe, "sirius-mbf192", far=1e-3)

See docs/client.md for the exception table and the retry policy.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeAlias, TypeVar

import httpx
import numpy as np
import orjson
import pydantic

from facebridge import __version__, exceptions
from facebridge.problems import PROBLEMS_BY_CODE
from facebridge.schemas.calibration import CalibrationReport
from facebridge.schemas.catalog import MappingList, ModelList, ReloadAnswer
from facebridge.schemas.embed import EmbedResponse
from facebridge.schemas.pairs import PairsDeleted, PairsRecorded, PairStatsResponse
from facebridge.schemas.problem import FieldError
from facebridge.schemas.translate import TranslateResponse
from facebridge.schemas.verify import Pair, Side, VerifyResponse

__all__ = [
    "BINARY_ROWS",
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "ConnectionFailedError",
    "ImageInput",
    "NotFoundError",
    "OperatingPoint",
    "PairInput",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "ServiceError",
    "SideInput",
    "TranslationResult",
    "UnavailableError",
    "ValidationError",
    "parse_retry_after",
]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""30 s to read an answer (a batch of photos on CPU takes seconds), 5 s to connect (a dead host)."""

BINARY_ROWS = 256
"""translate() switches to the .npy body above this many rows: JSON costs ~50x more per row."""

NPY = "application/x-npy"
RETRY_STATUSES = frozenset({429, 503})
# failures where the request most likely never reached the service, or the connection broke: all our
# calls are pure computations, so sending them again is safe. A read timeout is not among them: the
# service is still working on the request, and a second copy would only double its load.
RETRY_TRANSPORT: tuple[type[httpx.TransportError], ...] = (
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)

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


# ------------------------------------------------------------------------------------------ exceptions
class ServiceError(exceptions.FacebridgeError):
    """An error answer of the service, with the RFC 9457 problem fields kept apart for programs.

    A subclass of facebridge.exceptions.FacebridgeError, so code that handles the library's errors
    handles the client's too.

    `code` is the last segment of the problem `type` (urn:facebridge:problem:unknown-model ->
    "unknown-model"); `errors` names the request fields at fault. A body that is not a problem (a proxy's
    HTML page) still raises, with its text as `detail` and an empty `code`.
    """

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        errors: list[FieldError] | None = None,
        *,
        instance: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, errors[0].field if errors else None)
        self.args = (status, code, title, detail, errors)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.errors: list[FieldError] = list(errors or [])
        self.instance = instance
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def fields(self) -> list[str]:
        """The names of the fields at fault, e.g. ["pairs[0].b.model"]."""
        return [e.field for e in self.errors]

    def __str__(self) -> str:
        head = f"{self.status} {self.code or self.title}: {self.detail}"
        if self.errors:
            head += " [" + "; ".join(f"{e.field}: {e.message}" for e in self.errors) + "]"
        return head


class AuthenticationError(ServiceError):
    """401/403: the X-API-Key header is missing or not one of the service's keys."""


class NotFoundError(ServiceError):
    """404: an unknown model or space id (unknown-model), or an unknown route."""


class ConflictError(ServiceError):
    """409: the request is valid but cannot be served now (no-map-path, not-calibrated, model-unavailable,
    no-confidence)."""


class ValidationError(ServiceError):
    """400/422: the request itself is wrong; `errors` says which fields (not pydantic.ValidationError)."""


class PayloadTooLargeError(ServiceError):
    """413: too many rows, pairs or images, or a body or image over the service's limits."""


class RateLimitedError(ServiceError):
    """429 still answered after every retry (or with a Retry-After longer than the client will wait)."""


class UnavailableError(ServiceError):
    """503 still answered after every retry: models loading, or a request over its time budget."""


class ServerError(ServiceError):
    """Any other 5xx: a fault of the service or of a proxy in front of it. Not retried."""


class ConnectionFailedError(ServiceError):
    """No HTTP answer (refused, broken or timed-out connection); `status` is 0, `__cause__` is httpx's."""


ERRORS_BY_STATUS: dict[int, type[ServiceError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
    503: UnavailableError,
}


def _class_of_status(status: int) -> type[ServiceError]:
    if status in ERRORS_BY_STATUS:
        return ERRORS_BY_STATUS[status]
    return ServerError if status >= 500 else ServiceError


ERRORS_BY_CODE: dict[str, type[ServiceError]] = {
    code: _class_of_status(problem.status) for code, problem in PROBLEMS_BY_CODE.items()
}
"""Every problem code the service answers with (facebridge/problems.py, the service's own table), by the
status the service gives it: the code decides first, so a proxy that rewrites a status changes nothing."""


def error_class(status: int, code: str) -> type[ServiceError]:
    """The exception class for an error answer: by problem code, then by status."""
    return ERRORS_BY_CODE.get(code) or _class_of_status(status)


def _problem_code(problem_type: str) -> str:
    """'urn:facebridge:problem:unknown-model' or 'https://…/problems/unknown-model' -> 'unknown-model'."""
    if not problem_type or problem_type == "about:blank":
        return ""
    return problem_type.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]


def error_from_response(response: httpx.Response) -> ServiceError:
    """The typed exception an error answer becomes (problem+json or not)."""
    status = response.status_code
    extra: dict[str, Any] = {
        "request_id": response.headers.get("x-request-id"),
        "retry_after": parse_retry_after(response.headers.get("retry-after")),
    }
    body: Any = None
    if "json" in response.headers.get("content-type", ""):
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
    if isinstance(body, dict) and ("type" in body or "title" in body):
        code = _problem_code(str(body.get("type") or ""))
        errors = [
            FieldError(field=str(e.get("field", "")), message=str(e.get("message", "")))
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        title = str(body.get("title") or response.reason_phrase)
        detail = str(body.get("detail") or title)
        instance = body.get("instance")
        return error_class(status, code)(
            status,
            code,
            title,
            detail,
            errors,
            instance=instance if isinstance(instance, str) else None,
            **extra,
        )
    if isinstance(body, dict) and isinstance(body.get("detail"), str):  # FastAPI's default error shape
        text = body["detail"]
    else:
        text = response.text.strip()[:2000]
    reason = response.reason_phrase or f"HTTP {status}"
    return error_class(status, "")(status, "", reason, text or reason, None, **extra)


# ---------------------------------------------------------------------------------------------- retries
def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None when absent/invalid."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again: 429/503 and broken connections, at most `max_retries` more times."""

    max_retries: int = 3
    backoff: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 60.0

    def backoff_delay(self, attempt: int) -> float:
        """Exponential with a cap, half of it jittered so that many clients do not come back together."""
        ceiling = min(self.backoff_cap, self.backoff * 2.0**attempt)
        return ceiling / 2 + random.uniform(0.0, ceiling / 2)


# ----------------------------------------------------------------------------------------------- calls
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


# ------------------------------------------------------------------------------------------------- core
class _Core:
    """All the client's decisions, free of I/O: request building, retry timing, answer reading."""

    def __init__(
        self, base_url: str, api_key: str | None, timeout: httpx.Timeout, policy: RetryPolicy
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.policy = policy
        self.headers = {"User-Agent": f"facebridge-client/{__version__}", "Accept": "application/json"}
        if api_key:
            self.headers["X-API-Key"] = api_key

    def request(self, http: httpx.Client | httpx.AsyncClient, call: _Call[Any]) -> httpx.Request:
        """A fresh request for each attempt (a multipart body is a stream that one send consumes)."""
        headers = dict(self.headers)
        if call.content_type is not None:
            headers["Content-Type"] = call.content_type
        if call.content_type == NPY:
            headers["Accept"] = NPY
        return http.build_request(
            call.method,
            self.base_url + call.path,
            params=call.params,
            content=call.content,
            files=call.files,
            data=call.data,
            headers=headers,
            timeout=self.timeout,
        )

    def delay_after(self, call: _Call[Any], attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before the next attempt, or None when this answer is the final one."""
        status = response.status_code
        if status not in RETRY_STATUSES or status in call.answers or not call.retry:
            return None
        if attempt >= self.policy.max_retries:
            return None
        wait = parse_retry_after(response.headers.get("retry-after"))
        if wait is None:
            return self.policy.backoff_delay(attempt)
        return wait if wait <= self.policy.max_retry_after else None

    def delay_after_failure(self, call: _Call[Any], attempt: int, error: httpx.TransportError) -> float:
        """Seconds to wait after a request got no answer; raises ConnectionFailedError once it is hopeless."""
        if call.retry and attempt < self.policy.max_retries and isinstance(error, RETRY_TRANSPORT):
            return self.policy.backoff_delay(attempt)
        raise ConnectionFailedError(
            0,
            "connection-failed",
            "No answer from the service",
            f"{call.method} {self.base_url}{call.path}: {type(error).__name__}: {error} "
            f"(after {attempt + 1} attempt{'s' if attempt else ''})",
        ) from error

    def finish(self, call: _Call[T], response: httpx.Response) -> T:
        """The parsed answer, or the typed exception for an error answer."""
        if not (response.is_success or response.status_code in call.answers):
            raise error_from_response(response)
        try:
            return call.parse(response)
        except (ValueError, KeyError, TypeError) as exc:  # pydantic.ValidationError is a ValueError
            raise ServiceError(
                response.status_code,
                "invalid-answer",
                "Answer not understood",
                f"{call.method} {call.path}: {exc}",
                request_id=response.headers.get("x-request-id"),
            ) from exc


class _Base:
    """Configuration shared by both clients."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: httpx.Timeout | float,
        max_retries: int,
        backoff: float,
        backoff_cap: float,
        max_retry_after: float,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        policy = RetryPolicy(max_retries, backoff, backoff_cap, max_retry_after)
        timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._core = _Core(base_url, api_key, timeout, policy)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._core.policy


def _embed_options(
    record_subject: str | None,
    detector: str | None,
    aligned: bool | None,
    largest_only: bool | None,
    max_faces: int | None,
    detection_threshold: float | None,
    normalize: bool | None,
    mode: Literal["embedding", "full-network"] | None,
) -> dict[str, Any]:
    return {
        "record_subject": record_subject,
        "detector": detector,
        "aligned": aligned,
        "largest_only": largest_only,
        "max_faces": max_faces,
        "detection_threshold": detection_threshold,
        "normalize": normalize,
        "mode": mode,
    }


# ------------------------------------------------------------------------------------------------ Client
class Client(_Base):
    """Blocking client. Thread-safe as long as the underlying httpx.Client is (it is)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_cap: float = 8.0,
        max_retry_after: float = 60.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        """`http_client` (a mock transport, proxies, TLS settings…) is used as is and not closed."""
        super().__init__(base_url, api_key, timeout, max_retries, backoff, backoff_cap, max_retry_after)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()

    def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.send(self._core.request(self._http, call))
            except httpx.TransportError as error:
                delay = self._core.delay_after_failure(call, attempt, error)
            else:
                answer_delay = self._core.delay_after(call, attempt, response)
                if answer_delay is None:
                    return self._core.finish(call, response)
                delay = answer_delay
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def health(self) -> bool:
        """Liveness (/healthz): True when the process answers; False instead of raising (one attempt)."""
        try:
            return self._send(_health_call())
        except ServiceError:
            return False

    def ready(self) -> dict[str, Any]:
        """Readiness (/readyz): the body, also while loading (503: {"status": "loading"})."""
        return self._send(_ready_call())

    def models(self) -> ModelList:
        return self._send(_models_call())

    def mappings(self) -> MappingList:
        return self._send(_mappings_call())

    def calibration(self) -> CalibrationReport:
        """Calibrations and cohorts in force, and the drift watch (GET /calibration)."""
        return self._send(_calibration_call())

    def reload_mappings(self) -> ReloadAnswer:
        """Have the service reload its mappings folder (atomically)."""
        return self._send(_reload_call())

    def record_pairs(self, pairs: Sequence[tuple[str, tuple[str, Any], tuple[str, Any]]]) -> PairsRecorded:
        """Store templates of one capture by two models: (subject, (model_a, emb_a), (model_b, emb_b))."""
        return self._send(_record_pairs_call(pairs))

    def erase_subject(self, subject: str) -> PairsDeleted:
        """Erase every recorded pair of `subject` (DELETE /pairs?subject=)."""
        return self._send(_erase_call(subject))

    def pair_stats(self) -> PairStatsResponse:
        return self._send(_pair_stats_call())

    def embed(
        self,
        images: ImageInput | Sequence[ImageInput] | np.ndarray,
        models: Sequence[str] | None = None,
        *,
        channels: Literal["bgr", "rgb"] | None = None,
        detector: str | None = None,
        aligned: bool | None = None,
        largest_only: bool | None = None,
        max_faces: int | None = None,
        detection_threshold: float | None = None,
        normalize: bool | None = None,
        mode: Literal["embedding", "full-network"] | None = None,
        record_subject: str | None = None,
    ) -> EmbedResponse:
        """Detect, align and embed the faces of one photo or a batch; None: service default.

        Photos go as multipart uploads. A uint8 array of pixels, (height, width, 3) or (n, height,
        width, 3), goes as one .npy body with nothing to decode (aligned crops above all); `channels`
        ("bgr" from OpenCV, "rgb" from Pillow) is then required.
        """
        options = _embed_options(
            record_subject, detector, aligned, largest_only, max_faces, detection_threshold, normalize, mode
        )
        return self._send(_embed_call(images, models, options, channels))

    def translate(
        self,
        embeddings: np.ndarray | Sequence[Sequence[float]],
        source: str,
        target: str,
        *,
        binary: bool | None = None,
        confidence: bool = False,
    ) -> TranslationResult:
        """Carry (n, d) embeddings from `source`'s space into `target`'s.

        binary=None sends a .npy body above BINARY_ROWS rows and JSON below; True/False force one.
        JSON answers carry each row's confidence when the maps have predictors; the binary path asks
        for it with confidence=True (the service answers 409 no-confidence if a map has none).
        """
        return self._send(_translate_call(embeddings, source, target, binary, confidence))

    def verify(
        self,
        a_embedding: SideInput,
        a_model: str,
        b_embedding: SideInput,
        b_model: str,
        *,
        far: float | None = None,
        operating_point: OperatingPoint | None = None,
        threshold: float | None = None,
        space: str | None = None,
        normalization: Normalization | None = None,
    ) -> VerifyResponse:
        """Same person? Each side is a template of its model, or photo bytes/Path the service embeds."""
        pair = {"a": _side(a_model, a_embedding), "b": _side(b_model, b_embedding)}
        return self._send(_verify_call([pair], True, far, operating_point, threshold, space, normalization))

    def verify_pairs(
        self,
        pairs: Sequence[PairInput],
        *,
        far: float | None = None,
        operating_point: OperatingPoint | None = None,
        threshold: float | None = None,
        space: str | None = None,
        normalization: Normalization | None = None,
    ) -> VerifyResponse:
        """A batch of pairs under one decision rule; results come back in the order sent."""
        body = [_pair(p) for p in pairs]
        return self._send(_verify_call(body, False, far, operating_point, threshold, space, normalization))


# ------------------------------------------------------------------------------------------- AsyncClient
class AsyncClient(_Base):
    """asyncio client: the same operations and answers as Client, awaited."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_cap: float = 8.0,
        max_retry_after: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """`http_client` is used as is and not closed."""
        super().__init__(base_url, api_key, timeout, max_retries, backoff, backoff_cap, max_retry_after)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()

    async def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.send(self._core.request(self._http, call))
            except httpx.TransportError as error:
                delay = self._core.delay_after_failure(call, attempt, error)
            else:
                answer_delay = self._core.delay_after(call, attempt, response)
                if answer_delay is None:
                    return self._core.finish(call, response)
                delay = answer_delay
            await asyncio.sleep(delay)
            attempt += 1

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def health(self) -> bool:
        """Liveness (/healthz): True when the process answers; False instead of raising (one attempt)."""
        try:
            return await self._send(_health_call())
        except ServiceError:
            return False

    async def ready(self) -> dict[str, Any]:
        """Readiness (/readyz): the body, also while loading (503: {"status": "loading"})."""
        return await self._send(_ready_call())

    async def models(self) -> ModelList:
        return await self._send(_models_call())

    async def mappings(self) -> MappingList:
        return await self._send(_mappings_call())

    async def calibration(self) -> CalibrationReport:
        """Calibrations and cohorts in force, and the drift watch (GET /calibration)."""
        return await self._send(_calibration_call())

    async def reload_mappings(self) -> ReloadAnswer:
        """Have the service reload its mappings folder (atomically)."""
        return await self._send(_reload_call())

    async def record_pairs(
        self, pairs: Sequence[tuple[str, tuple[str, Any], tuple[str, Any]]]
    ) -> PairsRecorded:
        return await self._send(_record_pairs_call(pairs))

    async def erase_subject(self, subject: str) -> PairsDeleted:
        return await self._send(_erase_call(subject))

    async def pair_stats(self) -> PairStatsResponse:
        return await self._send(_pair_stats_call())

    async def embed(
        self,
        images: ImageInput | Sequence[ImageInput] | np.ndarray,
        models: Sequence[str] | None = None,
        *,
        channels: Literal["bgr", "rgb"] | None = None,
        detector: str | None = None,
        aligned: bool | None = None,
        largest_only: bool | None = None,
        max_faces: int | None = None,
        detection_threshold: float | None = None,
        normalize: bool | None = None,
        mode: Literal["embedding", "full-network"] | None = None,
        record_subject: str | None = None,
    ) -> EmbedResponse:
        """Detect, align and embed the faces of one photo or a batch (see Client.embed)."""
        options = _embed_options(
            record_subject, detector, aligned, largest_only, max_faces, detection_threshold, normalize, mode
        )
        return await self._send(_embed_call(images, models, options, channels))

    async def translate(
        self,
        embeddings: np.ndarray | Sequence[Sequence[float]],
        source: str,
        target: str,
        *,
        binary: bool | None = None,
        confidence: bool = False,
    ) -> TranslationResult:
        """Carry (n, d) embeddings from `source`'s space into `target`'s (see Client.translate)."""
        return await self._send(_translate_call(embeddings, source, target, binary, confidence))

    async def verify(
        self,
        a_embedding: SideInput,
        a_model: str,
        b_embedding: SideInput,
        b_model: str,
        *,
        far: float | None = None,
        operating_point: OperatingPoint | None = None,
        threshold: float | None = None,
        space: str | None = None,
        normalization: Normalization | None = None,
    ) -> VerifyResponse:
        """Same person? Each side is a template of its model, or photo bytes/Path the service embeds."""
        pair = {"a": _side(a_model, a_embedding), "b": _side(b_model, b_embedding)}
        return await self._send(
            _verify_call([pair], True, far, operating_point, threshold, space, normalization)
        )

    async def verify_pairs(
        self,
        pairs: Sequence[PairInput],
        *,
        far: float | None = None,
        operating_point: OperatingPoint | None = None,
        threshold: float | None = None,
        space: str | None = None,
        normalization: Normalization | None = None,
    ) -> VerifyResponse:
        """A batch of pairs under one decision rule; results come back in the order sent."""
        body = [_pair(p) for p in pairs]
        return await self._send(
            _verify_call(body, False, far, operating_point, threshold, space, normalization)
        )
