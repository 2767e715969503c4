"""`Client`: the blocking client."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import numpy as np

from facebridge.client.calls import (
    DEFAULT_TIMEOUT,
    ImageInput,
    Normalization,
    OperatingPoint,
    PairInput,
    SideInput,
    T,
    TranslationResult,
    _calibration_call,
    _Call,
    _embed_call,
    _erase_call,
    _health_call,
    _mappings_call,
    _models_call,
    _pair,
    _pair_stats_call,
    _ready_call,
    _record_pairs_call,
    _reload_call,
    _side,
    _translate_call,
    _verify_call,
)
from facebridge.client.core import _Base, _embed_options
from facebridge.client.errors import ServiceError
from facebridge.schemas.calibration import CalibrationReport
from facebridge.schemas.catalog import MappingList, ModelList, ReloadAnswer
from facebridge.schemas.embed import EmbedResponse
from facebridge.schemas.pairs import PairsDeleted, PairsRecorded, PairStatsResponse
from facebridge.schemas.verify import VerifyResponse


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
