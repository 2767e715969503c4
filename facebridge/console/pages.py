"""The console's routes: page shells (Jinja2, rendered on first use), static files, and the security
headers every console response carries. The pages hold no data: their scripts fetch it from the API."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facebridge import __version__

if TYPE_CHECKING:
    from jinja2 import Environment

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ]
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-cache"),  # revalidate (ETag) so an upgraded service never serves old scripts
]
# model ids as the manifest allows them: also keeps anything odd out of the page
MODEL_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
PAGES = {
    "overview": ("Overview", "/console"),
    "try": ("Try it", "/console/try"),
    "population": ("Population", "/console/population"),
    "rollout": ("Roll-out", "/console/rollout"),
}


class ConsoleHeaders:
    """Pure ASGI middleware: the console's security headers on every /console response (pages, static
    files and their 304s and 404s alike); other routes pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = kept + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


@cache
def environment() -> Environment:
    """Jinja2, imported and set up on the first page request: the service starts without it."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        auto_reload=False,
    )
    env.globals.update(pages=PAGES, version=__version__, static=PREFIX + "/static")
    return env


def render(template: str, page: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = environment().get_template(template).render(page=page, **context)
    return HTMLResponse(html, status_code=status_code)


async def overview(request: Request) -> HTMLResponse:
    return render("overview.html", "overview")


async def map_page(request: Request) -> HTMLResponse:
    source, target = request.path_params["source"], request.path_params["target"]
    if not (MODEL_ID.match(source) and MODEL_ID.match(target)):
        return render("missing.html", "", status_code=404)
    return render("map.html", "", source=source, target=target)


async def try_page(request: Request) -> HTMLResponse:
    return render("try.html", "try")


async def population_page(request: Request) -> HTMLResponse:
    return render("population.html", "population")


async def rollout_page(request: Request) -> HTMLResponse:
    return render("rollout.html", "rollout")


async def trailing_slash(request: Request) -> RedirectResponse:
    return RedirectResponse(PREFIX, status_code=308)


def mount(app: FastAPI) -> None:
    """The console's routes (left out of the OpenAPI document: they are pages, not API)."""
    routes = [
        ("", overview),
        ("/", trailing_slash),
        ("/maps/{source}/{target}", map_page),
        ("/try", try_page),
        ("/population", population_page),
        ("/rollout", rollout_page),
    ]
    for path, endpoint in routes:
        app.add_api_route(
            PREFIX + path,
            endpoint,
            methods=["GET", "HEAD"],
            include_in_schema=False,
            response_class=HTMLResponse if endpoint is not trailing_slash else RedirectResponse,
        )
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_middleware(ConsoleHeaders)
