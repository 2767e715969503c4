"""Operator actions: reload the mappings folder without a restart (also on SIGHUP)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from facebridge.errors import PROBLEM_RESPONSES
from facebridge.schemas.catalog import ReloadAnswer, ReloadRequest
from facebridge.state import ServiceState, get_state

router = APIRouter(tags=["admin"])


@router.post(
    "/admin/reload-mappings",
    response_model=ReloadAnswer,
    summary="Reload mappings/ atomically: requests see the old set or the new one, never half",
    responses={k: v for k, v in PROBLEM_RESPONSES.items() if k in (401, 422, 503)},
)
async def reload_mappings(
    body: ReloadRequest | None = None, state: ServiceState = Depends(get_state)
) -> ReloadAnswer:
    dry_run = body is not None and body.dry_run
    bank = await run_in_threadpool(state.reload_mappings, not dry_run)
    return ReloadAnswer(
        maps=sorted(m.id for m in bank.maps.values()),
        refused=[r.file for r in bank.refused],
        applied=not dry_run,
    )
