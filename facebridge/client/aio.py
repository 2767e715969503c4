"""`AsyncClient`: the asyncio client."""

from __future__ import annotations

import asyncio
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
