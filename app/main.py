"""The application factory: settings in, a FastAPI app with every router and error handler out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api import embed, health, mappings, models, translate, verify
from app.config import Settings
from app.errors import install_problem_handlers
from app.state import ServiceState

log = logging.getLogger("facebridge")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        yield

    app = FastAPI(
        title="facebridge",
        version=__version__,
        summary="Face embeddings across models: embed, translate, verify.",
        lifespan=lifespan,
    )
    app.state.service = state
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(embed.router)
    app.include_router(translate.router)
    app.include_router(verify.router)
    app.include_router(mappings.router)
    return app
