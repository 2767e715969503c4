"""/pairs: record template pairs during a roll-out, erase a subject, count what is stored.

Off (404 `pairs-disabled`) unless FACEBRIDGE_PAIRS_DB or FACEBRIDGE_PAIRS_DSN is set. The store keeps
two templates, both models' weight hashes, an opaque subject id and a time; never the photo.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter

from facebridge.audit import AuditEvent, event_for
from facebridge.bridge import Bridge
from facebridge.metrics import observe_batch
from facebridge.pairs.recording import rows_of_pairs
from facebridge.pairs.store import PairStore
from facebridge.schemas.pairs import (
    SUBJECT_DESCRIPTION,
    SUBJECT_PATTERN,
    PairsDeleted,
    PairsRecorded,
    PairsRequest,
    PairStatsEntry,
    PairStatsResponse,
    PairTimelineBucket,
    PairTimelineEntry,
    PairTimelineResponse,
)
from facebridge.service.errors import PROBLEM_RESPONSES, Problem, check_batch_size
from facebridge.service.recording import (
    PAIRS_RECORDED,
    audit_of,
    audit_recording,
    get_pair_store,
    record_rows,
    store_unavailable,
)
from facebridge.service.security import Principal, needs
from facebridge.service.state import get_bridge, state_of

log = logging.getLogger(__name__)

router = APIRouter(tags=["pairs"])

PAIRS_ERASED = Counter("facebridge_pairs_erased_total", "template pairs deleted by erasure requests")


@router.post(
    "/pairs",
    status_code=201,
    response_model=PairsRecorded,
    summary="Record template pairs (two models, one capture each)",
    description="Store each pair's two templates with the weight hashes the manifest pins for their "
    "models, the opaque subject id and the time; the rows are committed before this answer is sent. "
    "No photo is sent or stored. 404 `pairs-disabled` unless the pair store is configured.",
    responses=PROBLEM_RESPONSES,
)
async def record_pairs(
    body: PairsRequest,
    request: Request,
    principal: Principal = needs("pairs:record"),
    store: PairStore = Depends(get_pair_store),
    bridge: Bridge = Depends(get_bridge),
) -> PairsRecorded:
    limit = state_of(request).settings.max_pairs_per_request
    observe_batch("/pairs", len(body.pairs))
    check_batch_size(len(body.pairs), limit, "pairs", "pairs")
    rows = rows_of_pairs(bridge, body.pairs)
    subjects = len({row.subject for row in rows})
    try:
        recorded = await run_in_threadpool(record_rows, store, rows)
    except Problem:
        audit_recording(request, principal, "failed", 0, subjects=subjects)
        raise
    audit_recording(request, principal, "ok", recorded, subjects=subjects)
    PAIRS_RECORDED.labels("/pairs").inc(recorded)
    return PairsRecorded(recorded=recorded)


@router.delete(
    "/pairs",
    response_model=PairsDeleted,
    summary="Erase a subject: delete every pair recorded under its id",
    description="Removes the subject's rows of every model pair, in both orientations (0 when none).",
    responses=PROBLEM_RESPONSES,
)
async def erase_subject(
    request: Request,
    subject: str = Query(pattern=SUBJECT_PATTERN, description=SUBJECT_DESCRIPTION),
    principal: Principal = needs("pairs:erase"),
    store: PairStore = Depends(get_pair_store),
) -> PairsDeleted:
    audit = audit_of(request)
    erasure = AuditEvent(action="pairs.erase", outcome="ok", subject=subject)
    try:
        deleted = await run_in_threadpool(store.erase, subject)
    except Exception as error:
        if audit is not None:
            audit.record(event_for(request, principal.key_id, replace(erasure, outcome="failed")))
        raise store_unavailable(error, "erase the subject") from error
    if audit is not None:  # the audit trail names the subject (an opaque id); the service log does not
        audit.record(event_for(request, principal.key_id, replace(erasure, counts={"deleted": deleted})))
    PAIRS_ERASED.inc(deleted)
    log.info("pair store: erased %d row(s) of one subject", deleted)  # the id itself is not logged
    return PairsDeleted(deleted=deleted)


@router.get(
    "/pairs/stats",
    response_model=PairStatsResponse,
    summary="What the pair store holds: pairs, subjects and time span per model pair",
    responses=PROBLEM_RESPONSES,
    dependencies=[needs("pairs:read")],
)
async def pair_stats(store: PairStore = Depends(get_pair_store)) -> PairStatsResponse:
    try:
        stats = await run_in_threadpool(store.stats)
    except Exception as error:
        raise store_unavailable(error, "be read") from error
    retention = store.retention
    return PairStatsResponse(
        backend="postgresql" if store.dialect.name == "postgresql" else "sqlite",
        schema_version=store.schema_version,
        retention_days=(retention.max_age_days or None) if retention else None,
        max_rows_per_pair=(retention.max_rows_per_pair or None) if retention else None,
        model_pairs=[PairStatsEntry.model_validate(s, from_attributes=True) for s in stats],
    )


@router.get(
    "/pairs/timeline",
    response_model=PairTimelineResponse,
    summary="Pairs recorded per model pair per day (or hour): how fast a roll-out collects them",
    responses=PROBLEM_RESPONSES,
    dependencies=[needs("pairs:read")],
)
async def pair_timeline(
    bucket: Literal["day", "hour"] = Query("day", description="UTC day or hour"),
    store: PairStore = Depends(get_pair_store),
) -> PairTimelineResponse:
    try:
        points = await run_in_threadpool(store.timeline, bucket)
    except Exception as error:
        raise store_unavailable(error, "be read") from error
    entries: dict[tuple[str, str], list[PairTimelineBucket]] = {}
    for point in points:
        entries.setdefault((point.model_a, point.model_b), []).append(
            PairTimelineBucket(start=point.start, pairs=point.pairs)
        )
    return PairTimelineResponse(
        bucket=bucket,
        model_pairs=[
            PairTimelineEntry(source_model=a, target_model=b, buckets=buckets)
            for (a, b), buckets in sorted(entries.items())
        ],
    )
