"""Liveness and readiness probes for orchestrators (Docker, Kubernetes)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from facebridge.service.state import ServiceState, get_state

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz", summary="Readiness: model loading has finished", responses={503: {"description": "loading"}}
)
def readyz(state: ServiceState = Depends(get_state)) -> JSONResponse:
    if not state.ready.is_set():
        return JSONResponse({"status": "loading"}, status_code=503)
    if state.registry is None:
        return JSONResponse({"status": "failed", "detail": state.load_error}, status_code=503)
    loaded = sorted(k for k, s in state.registry.status.items() if s.state == "loaded")
    return JSONResponse({"status": "ready", "models_loaded": loaded})
