"""Operator actions: reload the mappings folder without a restart (also on SIGHUP); the roll-out views
(GET /migrations, GET /refits: facebridge/api/rollout.py) are served under this router too."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from facebridge.api import rollout
from facebridge.audit import AuditLog, event_for, reload_event
from facebridge.schemas.catalog import ReloadAnswer, ReloadRequest
from facebridge.service.errors import PROBLEM_RESPONSES
from facebridge.service.security import Principal, needs
from facebridge.service.state import ServiceState, get_state

router = APIRouter(tags=["admin"])
router.include_router(rollout.router)


@router.post(
    "/admin/reload-mappings",
    response_model=ReloadAnswer,
    summary="Reload mappings/ atomically: requests see the old set or the new one, never half",
    responses={k: v for k, v in PROBLEM_RESPONSES.items() if k in (401, 422, 503)},
)
async def reload_mappings(
    request: Request,
    body: ReloadRequest | None = None,
    principal: Principal = needs("admin"),
    state: ServiceState = Depends(get_state),
) -> ReloadAnswer:
    dry_run = body is not None and body.dry_run
    audit: AuditLog = request.app.state.audit
    try:
        bank = await run_in_threadpool(state.reload_mappings, not dry_run)
    except Exception as exc:
        failed = reload_event(None, state.settings, "failed", detail=type(exc).__name__)
        audit.record(event_for(request, principal.key_id, failed))
        raise
    outcome = "dry-run" if dry_run else "applied"
    audit.record(event_for(request, principal.key_id, reload_event(bank, state.settings, outcome)))
    return ReloadAnswer(
        maps=sorted(m.id for m in bank.maps.values()),
        refused=[r.file for r in bank.refused],
        applied=not dry_run,
    )
