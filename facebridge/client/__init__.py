"""Typed HTTP client for the facebridge service: `Client` (blocking) and `AsyncClient` (asyncio).

Both run the same core: every operation is first described as a `_Call` (what to send, how to read a
successful answer), and one `_Core` decides after each attempt whether to wait and try again, turns
problem+json answers into typed exceptions and parses the rest into the pydantic models of
facebridge.schemas. The two classes differ only in how they send a request and how they sleep.

    with Client("http://localhost:8000", api_key="…") as fb:
        moved = fb.translate(templates, "arcface-mbf128", "sirius-mbf192")
        answer = fb.verify(moved.embeddings[0], "sirius-mbf192", probe, "sirius-mbf192", far=1e-3)

See docs/client.md for the exception table and the retry policy. The modules: calls.py (each
operation as a `_Call`), core.py (the shared core), errors.py (the exceptions and how an answer picks
one), retries.py (Retry-After and backoff), sync.py (`Client`), aio.py (`AsyncClient`).
"""

from __future__ import annotations

from facebridge.client.aio import AsyncClient
from facebridge.client.calls import (
    BINARY_ROWS,
    DEFAULT_TIMEOUT,
    ImageInput,
    OperatingPoint,
    PairInput,
    SideInput,
    TranslationResult,
)
from facebridge.client.errors import (
    ERRORS_BY_CODE,
    ERRORS_BY_STATUS,
    AuthenticationError,
    ConflictError,
    ConnectionFailedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    ServiceError,
    UnavailableError,
    ValidationError,
    error_class,
    error_from_response,
)
from facebridge.client.retries import RetryPolicy, parse_retry_after
from facebridge.client.sync import Client

__all__ = [
    "BINARY_ROWS",
    "DEFAULT_TIMEOUT",
    "ERRORS_BY_CODE",
    "ERRORS_BY_STATUS",
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
    "error_class",
    "error_from_response",
    "parse_retry_after",
]
