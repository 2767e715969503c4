"""The core both clients run: send, decide whether to try again, raise or parse."""

from __future__ import annotations

from typing import Any, Literal

import httpx

from facebridge import __version__
from facebridge.client.calls import NPY, T, _Call
from facebridge.client.errors import ConnectionFailedError, ServiceError, error_from_response
from facebridge.client.retries import RETRY_STATUSES, RETRY_TRANSPORT, RetryPolicy, parse_retry_after


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
