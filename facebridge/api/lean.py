"""A route class for the hot routes (/translate, /verify, /embed): no dependency solving per request.

FastAPI resolves a route's dependencies anew on every request; for a one-embedding /translate that
bookkeeping (two scope checks, the key header, the bridge) cost more than the translation itself.
A `LeanRoute` endpoint takes the `Request` and returns a `Response` it serialised itself; the route
still declares its scope with `dependencies=[needs("translate")]`, so the OpenAPI document states it
exactly as before, and serving it runs the same check (`require_scope`, facebridge/service/security.py) once
with every scope its dependencies declare: the same 401 and 403 answers, audit lines and metrics.

Only key-scope dependencies (`needs(...)`) are allowed on such a route, its own or its router's;
anything else is refused when the app is built, so none is ever skipped silently. Dependency
overrides (`app.dependency_overrides`) do not apply to these routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from fastapi.security import SecurityScopes
from starlette.requests import Request
from starlette.responses import Response

from facebridge.service.security import API_KEY_HEADER, require_scope

Endpoint = Callable[[Request], Awaitable[Response]]


def declared_scopes(dependencies: Sequence[params.Depends], where: str) -> list[str]:
    """The scopes a list of `needs(...)` dependencies asks for, in order; TypeError for anything else."""
    scopes: list[str] = []
    for dependency in dependencies:
        if not isinstance(dependency, params.Security) or dependency.dependency is not require_scope:
            raise TypeError(
                f"{where}: a LeanRoute serves only needs(...) dependencies, not {dependency!r}; "
                "use a plain APIRoute for this route"
            )
        scopes += [s for s in dependency.scopes or () if s not in scopes]
    return scopes


def _effective_dependencies(route: APIRoute) -> Sequence[params.Depends]:
    """The route's dependencies with its router's. FastAPI 0.16x builds an included route's handler
    with the merged list in a context variable (older versions copy the route with the merged list)."""
    from fastapi import routing

    variable = getattr(routing, "_effective_route_context_var", None)
    context = variable.get() if variable is not None else None
    if context is not None and getattr(context, "original_route", None) is route:
        merged: Sequence[params.Depends] = getattr(context, "dependencies", route.dependencies)
        return merged
    return route.dependencies


class LeanRoute(APIRoute):
    """An APIRoute whose endpoint is `async def endpoint(request) -> Response` (module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        scopes = declared_scopes(_effective_dependencies(self), self.path)
        endpoint: Endpoint = self.endpoint
        header = API_KEY_HEADER.lower()

        async def handler(request: Request) -> Response:
            await require_scope(SecurityScopes(scopes), request, request.headers.get(header))
            return await endpoint(request)

        return handler
