"""Errors of the client: one exception per kind of failure, chosen by problem code (the
service's own table, facebridge/problems.py) and then by status."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from facebridge import exceptions
from facebridge.client.retries import parse_retry_after
from facebridge.problems import PROBLEMS_BY_CODE
from facebridge.schemas.problem import FieldError


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
