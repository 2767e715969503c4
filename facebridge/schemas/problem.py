"""RFC 9457 problem details: the body of every error answer (the table: facebridge/problems.py)."""

from __future__ import annotations

from pydantic import BaseModel


class FieldError(BaseModel):
    """Which part of the request is wrong: a JSON-pointer-like path with list indices, and why."""

    field: str
    message: str


class ProblemDetail(BaseModel):
    """RFC 9457 body; `errors` lists offending fields when there are any."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None
