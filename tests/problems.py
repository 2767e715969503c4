"""The check every refusal in the HTTP tests goes through: an RFC 9457 problem+json body with the
service's type URI, its status, a title and a detail, and the culprit field when one is named."""

from __future__ import annotations

import httpx


def assert_problem(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == f"urn:facebridge:problem:{code}" and body["status"] == status
    assert body["title"] and body["detail"]
    if field is not None:
        assert any(e["field"] == field for e in body["errors"]), body
    return body
