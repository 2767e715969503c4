"""RFC 9457 problem details: every error the service returns has the same machine-readable shape.

The library raises domain exceptions (facebridge/exceptions.py); the one table of what each becomes,
and of the codes only the HTTP layer answers with, is facebridge/problems.py (the client reads it too).
Here: the `Problem` a route raises, the handlers that turn every error into a problem+json answer, and
the error responses the OpenAPI document states.
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
from facebridge.problems import DOMAIN_PROBLEMS, HTTP_PROBLEMS, PROBLEM_TYPE_PREFIX, PROBLEMS_BY_CODE
from facebridge.schemas.problem import FieldError, ProblemDetail

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem+json body."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, errors: list[FieldError] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail, self.errors = status, code, title, detail, errors

    @classmethod
    def of(
        cls, code: str, detail: str, errors: list[FieldError] | None = None, *, title: str | None = None
    ) -> Problem:
        """The problem of an HTTP-layer code (facebridge/problems.py HTTP_PROBLEMS): its status and
        title from the table, so a code never answers with two statuses. KeyError for a code not there."""
        kind = HTTP_PROBLEMS[code]
        return cls(kind.status, code, title or kind.title, detail, errors)


def check_batch_size(count: int, limit: int, field: str, noun: str, detail: str | None = None) -> None:
    """413 `batch-too-large` when one request carries more `noun` (in `field`) than `limit` allows."""
    if count > limit:
        raise ex.BatchTooLarge(detail or f"{count} {noun}; the limit is {limit}", field=field)


def problem_from(error: ex.FacebridgeError) -> Problem:
    """The problem a domain error becomes: the table entry of its class (or nearest base class)."""
    kind = next(k for k in type(error).__mro__ if k in DOMAIN_PROBLEMS)
    status, code, title = DOMAIN_PROBLEMS[kind]
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
    return Problem.of("validation-error", detail, field_errors)


_STATUS_DESCRIPTIONS = {
    401: "Missing or invalid API key (unknown, wrong, expired or revoked)",
    403: "The API key lacks the scope this route needs",
    404: "Unknown model or resource",
    409: "Model known but not installed or refused",
    413: "Image or request too large",
    422: "Invalid input",
    429: "Too many requests (in flight, or for this API key); see Retry-After",
    503: "Models still loading, or a store the service needs unreachable",
}


def _described(status: int) -> str:
    """The status's description and every problem code answered with it (from the one table)."""
    codes = sorted(p.code for p in PROBLEMS_BY_CODE.values() if p.status == status)
    return f"{_STATUS_DESCRIPTIONS[status]}. Problem types: " + ", ".join(f"`{c}`" for c in codes)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemDetail, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": _described(status)}
    for status in _STATUS_DESCRIPTIONS
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
        problem = Problem(exc.status_code, code, str(exc.detail), str(exc.detail))  # Starlette's status
        return problem_response(request, problem, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        problem = Problem.of("internal-error", "the server failed to answer; see its log")
        return problem_response(request, problem)
