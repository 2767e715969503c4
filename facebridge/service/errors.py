"""RFC 9457 problem details: every error the service returns has the same machine-readable shape.

The library raises domain exceptions (facebridge/exceptions.py); PROBLEM_TYPES is the one table that
says which HTTP status, problem type and title each becomes.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facebridge import exceptions as ex
from facebridge.metrics import ERRORS
from facebridge.schemas.problem import FieldError, ProblemDetail

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:facebridge:problem:"


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem+json body."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, errors: list[FieldError] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail, self.errors = status, code, title, detail, errors


PROBLEM_TYPES: dict[type[ex.FacebridgeError], tuple[int, str, str]] = {
    ex.FacebridgeError: (422, "invalid-request", "Request cannot be served"),
    ex.UnknownModel: (404, "unknown-model", "Unknown model"),
    ex.ModelNotReady: (409, "model-unavailable", "Model unavailable"),
    ex.FullNetworkUnavailable: (409, "full-network-unavailable", "Full-network mode unavailable"),
    ex.NoMapPath: (409, "no-map-path", "No map between these spaces"),
    ex.NotCalibrated: (409, "not-calibrated", "No calibrated threshold"),
    ex.SameSpace: (422, "same-space", "Nothing to translate"),
    ex.NotReady: (503, "not-ready", "Models are not loaded"),
    ex.BatchTooLarge: (413, "batch-too-large", "Too many items in one request"),
    ex.InvalidEmbedding: (422, "invalid-embedding", "Invalid embedding"),
    ex.EmptyBatch: (422, "empty-batch", "Invalid embedding"),
    ex.WrongDimension: (422, "wrong-dim", "Invalid embedding"),
    ex.NonFinite: (422, "non-finite", "Invalid embedding"),
    ex.ZeroVector: (422, "zero-vector", "Invalid embedding"),
    ex.NoFaceFound: (422, "no-face", "No face found"),
    ex.InvalidNpy: (422, "invalid-npy", "Body is not a usable .npy array"),
    ex.InvalidBase64: (422, "invalid-base64", "Image is not valid base64"),
    ex.ImageError: (422, "invalid-image", "Image rejected"),
    ex.UndecodableImage: (422, "undecodable-image", "Image rejected"),
    ex.ImageTooLarge: (413, "image-too-large", "Image too large"),
    ex.AccessDenied: (403, "forbidden", "Forbidden"),
    ex.InvalidApiKey: (401, "unauthorized", "Missing or invalid API key"),
    ex.MissingScope: (403, "missing-scope", "API key lacks the scope this route needs"),
}


def check_batch_size(count: int, limit: int, field: str, noun: str, detail: str | None = None) -> None:
    """413 `batch-too-large` when one request carries more `noun` (in `field`) than `limit` allows."""
    if count > limit:
        raise Problem(
            413,
            "batch-too-large",
            f"Too many {noun}",
            detail or f"{count} {noun}; the limit is {limit}",
            [FieldError(field=field, message=f"too many {noun}")],
        )


def problem_from(error: ex.FacebridgeError) -> Problem:
    """The problem a domain error becomes: the table entry of its class (or nearest base class)."""
    kind = next(k for k in type(error).__mro__ if k in PROBLEM_TYPES)
    status, code, title = PROBLEM_TYPES[kind]
    errors = [FieldError(field=error.field, message=str(error))] if error.field else None
    return Problem(status, code, title, str(error), errors)


def problem_response(
    request: Request, problem: Problem, headers: dict[str, str] | None = None
) -> JSONResponse:
    ERRORS.labels(problem.code).inc()
    body = ProblemDetail(
        type=PROBLEM_TYPE_PREFIX + problem.code,
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        instance=request.url.path,
        errors=problem.errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _location(loc: tuple[Any, ...]) -> str:
    """('body', 'images', 3, 'data') -> 'images[3].data'."""
    parts = [p for p in loc if p not in ("body",)]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_problem(errors: list[dict[str, Any]] | Any) -> Problem:
    field_errors = [
        FieldError(field=_location(tuple(e.get("loc", ()))), message=str(e.get("msg"))) for e in errors
    ]
    first = field_errors[0] if field_errors else None
    detail = f"{first.field}: {first.message}" if first else "request is not valid"
    if len(field_errors) > 1:
        detail += f" (and {len(field_errors) - 1} more)"
    return Problem(422, "validation-error", "Request is not valid", detail, field_errors)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemDetail, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": description}
    for status, description in {
        401: "Missing or invalid API key (unknown, wrong, expired or revoked)",
        403: "The API key lacks the scope this route needs",
        404: "Unknown model or resource",
        409: "Model known but not installed or refused",
        413: "Image or request too large",
        422: "Invalid input",
        429: "Too many requests (in flight, or for this API key); see Retry-After",
        503: "Models still loading",
    }.items()
}


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(ex.FacebridgeError)
    async def _domain(request: Request, exc: ex.FacebridgeError) -> JSONResponse:
        return problem_response(request, problem_from(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(request, validation_problem(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        problem = Problem(exc.status_code, code, str(exc.detail), str(exc.detail))
        return problem_response(request, problem, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        problem = Problem(500, "internal-error", "Internal error", "the server failed to answer; see its log")
        return problem_response(request, problem)
