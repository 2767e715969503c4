"""The one table of problem types (facebridge/problems.py) against the code that answers with them: every
code a route or middleware raises is in it, each code has one status, and the client reads the same table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from facebridge import client
from facebridge.problems import DOMAIN_PROBLEMS, HTTP_PROBLEMS, PROBLEMS_BY_CODE

pytestmark = pytest.mark.fast

PACKAGE = Path(__file__).resolve().parents[1] / "facebridge"
TABLE_HOME = PACKAGE / "service" / "errors.py"  # the only module that builds a Problem from parts


def _calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


def _raised_codes() -> dict[str, list[str]]:
    """code -> where `Problem.of(code, ...)` is written; fails on a Problem built from parts elsewhere."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for call in _calls(path):
            func = call.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "of"
                and getattr(func.value, "id", "") == "Problem"
            ):
                first = call.args[0]
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                    f"{path}:{call.lineno}: write the code as a literal"
                )
                found.setdefault(first.value, []).append(f"{path.name}:{call.lineno}")
            elif isinstance(func, ast.Name) and func.id == "Problem":
                assert path == TABLE_HOME, (
                    f"{path}:{call.lineno}: use Problem.of(code, ...) or a domain exception"
                )
    return found


def test_every_code_raised_is_in_the_table() -> None:
    raised = _raised_codes()
    unknown = {code: where for code, where in raised.items() if code not in HTTP_PROBLEMS}
    assert not unknown, f"add to facebridge/problems.py HTTP_PROBLEMS: {unknown}"


def test_every_code_in_the_table_is_answered_somewhere() -> None:
    raised = set(_raised_codes())
    handlers = {  # the codes errors.py's handlers give Starlette's own HTTP errors
        node.value
        for node in ast.walk(ast.parse(TABLE_HOME.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    unused = sorted(set(HTTP_PROBLEMS) - raised - handlers)
    assert not unused, f"codes nothing answers with: {unused}"


def test_each_code_names_one_problem() -> None:
    domain_codes = [problem.code for problem in DOMAIN_PROBLEMS.values()]
    assert len(domain_codes) == len(set(domain_codes))
    assert not set(domain_codes) & set(HTTP_PROBLEMS), "a code both a domain and an HTTP problem"
    assert all(code == problem.code for code, problem in HTTP_PROBLEMS.items())
    assert all(400 <= problem.status < 600 for problem in PROBLEMS_BY_CODE.values())


def test_the_client_chooses_by_the_services_status_for_every_code() -> None:
    expected = {
        401: client.AuthenticationError,
        403: client.AuthenticationError,
        404: client.NotFoundError,
        409: client.ConflictError,
        413: client.PayloadTooLargeError,
        422: client.ValidationError,
        400: client.ValidationError,
        429: client.RateLimitedError,
        503: client.UnavailableError,
    }
    for code, problem in PROBLEMS_BY_CODE.items():
        wanted = expected.get(
            problem.status, client.ServerError if problem.status >= 500 else client.ServiceError
        )
        assert client.error_class(problem.status, code) is wanted, code
        # the code decides even where a proxy in front answered with another status
        assert client.error_class(502, code) is wanted, code
    assert client.error_class(502, "no-such-code") is client.ServerError
