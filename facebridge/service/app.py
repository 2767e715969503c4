"""The application factory: settings in, a FastAPI app with every router and error handler out."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from facebridge import __version__
from facebridge.api import admin, calibration, embed, health, mappings, models, pairs, translate, verify
from facebridge.api.openapi import install_openapi
from facebridge.audit import AuditLog, reload_event
from facebridge.blas import set_blas_threads
from facebridge.config import Settings
from facebridge.console import install_console
from facebridge.logs import configure_logging
from facebridge.metrics import track_inventory
from facebridge.pairs.store import PairStore
from facebridge.service.errors import install_problem_handlers
from facebridge.service.middleware import MetricsMiddleware, RequestGuard, metrics_endpoint
from facebridge.service.security import ApiKeys, needs
from facebridge.service.state import ServiceState

log = logging.getLogger("facebridge")


def reload_on_signal(state: ServiceState, keys: ApiKeys, audit: AuditLog) -> None:
    """What SIGHUP does: reload the mappings folder (maps, cohorts, calibrations) and the keys file."""
    try:
        bank = state.reload_mappings()
    except Exception as exc:
        log.exception("SIGHUP: mappings not reloaded")
        audit.record(reload_event(None, state.settings, "failed", "SIGHUP", f"{type(exc).__name__}: {exc}"))
    else:
        audit.record(reload_event(bank, state.settings, "applied", "SIGHUP"))
    keys.reload(force=True, cause="SIGHUP")


def install_reload_signal(state: ServiceState, keys: ApiKeys, audit: AuditLog) -> None:
    """SIGHUP reloads the mappings folder and the keys file (in a thread, off the event loop)."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(
            signal.SIGHUP, lambda: loop.run_in_executor(None, reload_on_signal, state, keys, audit)
        )
    except (NotImplementedError, RuntimeError, AttributeError):  # no SIGHUP on this platform
        log.info("SIGHUP reload not available here; use POST /admin/reload-mappings")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    state = ServiceState(settings)
    keys = ApiKeys.from_settings(settings)
    audit = AuditLog(settings.audit_log_path, required=settings.audit_log is not None)
    keys.audit = audit

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        audit.open()  # an audit log that cannot be written stops the service here
        state.pairs = PairStore.from_settings(settings)  # None unless FACEBRIDGE_PAIRS_DB/_DSN is set
        audit.attach_store(state.pairs)  # the audit_log table of the pair store's database too
        blas_before = set_blas_threads(settings.blas_threads)  # FACEBRIDGE_BLAS_THREADS, default 1
        state.start_loading()
        install_reload_signal(state, keys, audit)
        try:
            yield
        finally:
            if blas_before is not None and settings.blas_threads:
                set_blas_threads(blas_before)
            audit.close()
            if state.pairs is not None:
                state.pairs.close()

    app = FastAPI(
        title="facebridge",
        version=__version__,
        summary="Face embeddings across models: embed, translate, verify.",
        lifespan=lifespan,
    )
    app.state.service = state
    app.state.api_keys = keys
    app.state.audit = audit
    install_problem_handlers(app)
    app.include_router(health.router)  # probes stay open for orchestrators
    # every route needs a valid key; a route that needs more says so itself with needs(SCOPE)
    protected = [needs()]
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_request_bytes,
        max_in_flight=settings.max_in_flight,
        time_budget_s=settings.request_time_budget_s,
        keys=keys,
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
    for router in (  # the hot template routes first: routes are matched in order, one by one
        translate.router,
        verify.router,
        models.router,
        embed.router,
        mappings.router,
        calibration.router,
        admin.router,
        pairs.router,
    ):
        app.include_router(router, dependencies=protected)
    install_console(app, settings)
    install_openapi(app)
    return app
