"""The application factory: settings in, a FastAPI app with every router and error handler out."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse

from facebridge import __version__
from facebridge.api import admin, calibration, embed, health, mappings, models, pairs, translate, verify
from facebridge.api.openapi import install_openapi
from facebridge.config import Settings
from facebridge.errors import install_problem_handlers
from facebridge.logs import configure_logging
from facebridge.metrics import MetricsMiddleware, metrics_endpoint, track_inventory
from facebridge.middleware import RequestGuard
from facebridge.pairs.store import PairStore
from facebridge.security import KeyRing, require_api_key
from facebridge.state import ServiceState

log = logging.getLogger("facebridge")


def install_reload_signal(state: ServiceState) -> None:
    """SIGHUP reloads the mappings folder (in a thread, off the event loop)."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, state.reload_mappings))
    except (NotImplementedError, RuntimeError, AttributeError):  # no SIGHUP on this platform
        log.info("SIGHUP reload not available here; use POST /admin/reload-mappings")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.pairs = PairStore.from_settings(settings)  # None unless FACEBRIDGE_PAIRS_DB/_DSN is set
        state.start_loading()
        install_reload_signal(state)
        try:
            yield
        finally:
            if state.pairs is not None:
                state.pairs.close()

    app = FastAPI(
        title="facebridge",
        version=__version__,
        summary="Face embeddings across models: embed, translate, verify.",
        lifespan=lifespan,
    )
    app.state.service = state
    app.state.key_ring = KeyRing.from_sources(
        settings.api_keys, settings.api_keys_file, settings.auth_disabled
    )
    install_problem_handlers(app)
    app.include_router(health.router)  # probes stay open for orchestrators
    protected = [Depends(require_api_key)]
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_request_bytes,
        max_in_flight=settings.max_in_flight,
        time_budget_s=settings.request_time_budget_s,
    )
    app.add_middleware(MetricsMiddleware)  # outermost: counts the guard's refusals too
    track_inventory(
        lambda: len(state.bank.maps) if state.bank else 0,
        lambda: len(state.bank.refused) if state.bank else 0,
        lambda: sum(s.state == "loaded" for s in state.registry.status.values()) if state.registry else 0,
    )
    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        tags=["health"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        dependencies=[] if settings.metrics_public else protected,
    )
    for router in (
        models.router,
        embed.router,
        translate.router,
        verify.router,
        mappings.router,
        calibration.router,
        admin.router,
        pairs.router,
    ):
        app.include_router(router, dependencies=protected)
    install_openapi(app)
    return app
