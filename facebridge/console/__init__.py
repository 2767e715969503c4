"""The operator console: a read-only web UI served by the service itself at /console.

Server-rendered Jinja2 page shells and a few vanilla ES modules (no build step, nothing from a CDN)
that call the same JSON routes any client calls, with the API key the operator types once per browser
tab (kept in sessionStorage). Off with FACEBRIDGE_CONSOLE=false: then nothing of it is imported or
mounted. See docs/console.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from facebridge.config import Settings


def install_console(app: FastAPI, settings: Settings) -> None:
    """Mount the console's pages and static files (and its response headers) unless it is turned off."""
    if not settings.console:
        return
    from facebridge.console.pages import mount

    mount(app)
