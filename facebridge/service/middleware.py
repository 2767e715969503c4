"""Per-request guards and context, as pure ASGI middleware (no per-request thread hop), and the
request metrics with their /metrics endpoint.

- a request id (the caller's X-Request-ID if sane, else a new one) in every log line and answer;
- an access log line per request (method, route, status, duration; never bodies);
- limits answered with problem+json before the app runs: body size (413), requests in flight (429);
- the API key, looked up once (facebridge/service/security.py) and its per-key limits applied: requests per
  second and in flight (429 with Retry-After; other keys are not affected);
- a time budget per request (503 once it is spent, if no answer has started).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facebridge.logs import request_id
from facebridge.metrics import ERRORS, LATENCY, REQUESTS
from facebridge.problems import PROBLEM_TYPE_PREFIX
from facebridge.service.errors import PROBLEM_MEDIA_TYPE, Problem
from facebridge.service.security import AUTH, PRINCIPAL, ApiKeys, KeyLimiter

access_log = logging.getLogger("facebridge.access")
UNLIMITED = {"/healthz", "/readyz", "/metrics"}
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_in_flight: int,
        time_budget_s: float | None,
        keys: ApiKeys | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.time_budget_s = time_budget_s
        self.keys = keys
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        start = time.perf_counter()
        started = False
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, int(message["status"])
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        async def answer(problem: Problem, extra: dict[str, str] | None = None) -> None:
            """A problem+json answer sent from here, before (or instead of) the app."""
            ERRORS.labels(problem.code).inc()
            body = json.dumps(
                {
                    "type": PROBLEM_TYPE_PREFIX + problem.code,
                    "title": problem.title,
                    "status": problem.status,
                    "detail": problem.detail,
                    "instance": scope.get("path", ""),
                }
            ).encode()
            response_headers = [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ]
            response_headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
            start_message = {
                "type": "http.response.start",
                "status": problem.status,
                "headers": response_headers,
            }
            await send_with_id(start_message)
            await send_with_id({"type": "http.response.body", "body": body})

        path = scope.get("path", "")
        guarded = path not in UNLIMITED
        counted = False
        held: KeyLimiter | None = None
        key_id = None
        try:
            length = headers.get(b"content-length")
            if guarded and length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await answer(
                    Problem.of(
                        "request-too-large",
                        f"body of {int(length)} bytes; the limit is {self.max_body_bytes}",
                    )
                )
                return
            if guarded and self.in_flight >= self.max_in_flight:
                in_flight = f"{self.in_flight} requests in flight; the limit is {self.max_in_flight}"
                await answer(Problem.of("too-many-requests", in_flight), {"retry-after": "1"})
                return
            if guarded:
                self.in_flight += 1
                counted = True
            if guarded and self.keys is not None:
                raw = headers.get(b"x-api-key")
                auth = await self.keys.authenticate(raw.decode("latin-1") if raw else None)
                scope[AUTH] = auth
                if auth.principal is not None:
                    key_id = auth.principal.key_id
                    limiter = auth.principal.limiter
                    refusal = limiter.admit() if limiter.limited else None
                    if refusal is not None:
                        limiter.count(refusal.outcome)
                        await answer(
                            Problem.of(
                                "too-many-requests",
                                refusal.detail,
                                title="Too many requests for this API key",
                            ),
                            {"retry-after": str(refusal.retry_after)},
                        )
                        return
                    if limiter.limited:
                        held = limiter
            received = 0

            async def counting_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if guarded and received > self.max_body_bytes:  # a body sent without Content-Length
                        raise Problem.of(
                            "request-too-large", f"body over the limit of {self.max_body_bytes} bytes"
                        )
                return message

            try:
                if guarded and self.time_budget_s:
                    # a deadline on this task, not a second task per request as wait_for would start
                    async with asyncio.timeout(self.time_budget_s):
                        await self.app(scope, counting_receive, send_with_id)
                else:
                    await self.app(scope, counting_receive, send_with_id)
            except Problem as refused:  # the body outgrew the limit while it was read
                if not started:
                    await answer(refused)
            except TimeoutError:
                if not started:
                    budget = f"no answer within {self.time_budget_s} s; send a smaller batch"
                    await answer(Problem.of("time-budget-exceeded", budget), {"retry-after": "1"})
        finally:
            if counted:
                self.in_flight -= 1
            if held is not None:
                held.release()
            served = scope.get(PRINCIPAL)
            if served is not None:
                served.limiter.count("served")
            if access_log.isEnabledFor(logging.INFO):  # the fields below are not built for nothing
                _log_access(scope, path, status, start, key_id)
            request_id.reset(token)


def _log_access(scope: Scope, path: str, status: int, start: float, key_id: str | None) -> None:
    """The access line: method, route, status, duration and key id (never a body or a key)."""
    route = scope.get("route")
    elapsed_ms = (time.perf_counter() - start) * 1000
    access_log.info(
        "%s %s %d %.1f ms",
        scope.get("method"),
        path,
        status,
        elapsed_ms,
        extra={
            "fields": {
                "method": scope.get("method"),
                "route": getattr(route, "path", path),
                "status": status,
                "duration_ms": round(elapsed_ms, 2),
                "key_id": key_id,
            }
        },
    )


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request under its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (route, method, status) -> its counter and histogram children: a label lookup takes a lock
        # and hashes the label values, twice a request; the routes and statuses seen are few
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            children = self._children.get((template, method, status))
            if children is None:
                children = (REQUESTS.labels(template, method, str(status)), LATENCY.labels(template, method))
                self._children[(template, method, status)] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)


async def metrics_endpoint(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
