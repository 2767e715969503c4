"""/pairs: record template pairs during a roll-out, erase a subject, count what is stored.

Off (404 `pairs-disabled`) unless FACEBRIDGE_PAIRS_DB or FACEBRIDGE_PAIRS_DSN is set. The store keeps
two templates, both models' weight hashes, an opaque subject id and a time; never the photo.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter

from facebridge.audit import AuditEvent, AuditLog, event_for
from facebridge.bridge import Bridge
from facebridge.exceptions import (
    ModelNotReady,
    NonFinite,
    SameSpace,
    UnknownModel,
    WrongDimension,
    ZeroVector,
)
from facebridge.metrics import observe_batch
from facebridge.pairs.store import PairRow, PairStore
from facebridge.schemas.embed import EmbedOptions, EmbedResponse
from facebridge.schemas.pairs import (
    SUBJECT_DESCRIPTION,
    SUBJECT_PATTERN,
    PairIn,
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
from facebridge.service.security import Principal, needs
from facebridge.service.state import ServiceState, get_bridge, state_of

log = logging.getLogger(__name__)

router = APIRouter(tags=["pairs"])

PAIRS_RECORDED = Counter(
    "facebridge_pairs_recorded_total", "template pairs committed to the pair store", ["route"]
)
PAIRS_ERASED = Counter("facebridge_pairs_erased_total", "template pairs deleted by erasure requests")
RECORDED_HEADER = "Facebridge-Pairs-Recorded"


def require_store(state: ServiceState) -> PairStore:
    if state.pairs is None:
        raise Problem.of(
            "pairs-disabled",
            "this service stores no template pairs: set FACEBRIDGE_PAIRS_DB (a SQLite file) or "
            "FACEBRIDGE_PAIRS_DSN (PostgreSQL) to turn it on",
        )
    return state.pairs


async def get_pair_store(request: Request) -> PairStore:
    return require_store(state_of(request))


def store_unavailable(error: Exception, action: str) -> Problem:
    # the first line only: PostgreSQL's DETAIL ("Failing row contains (…)") would log a subject id
    first_line = next(iter(str(error).splitlines()), "")
    log.error("pair store: %s failed: %s: %s", action, type(error).__name__, first_line)
    return Problem.of(
        "pairs-unavailable",
        f"the pair store could not {action} ({type(error).__name__}); nothing was changed, retry later",
    )


# ---------------------------------------------------------------------------------------------- checks
def template_space(bridge: Bridge, model: str, where: str) -> tuple[int, str]:
    """(dimension, weight sha256) of a model's templates: its manifest entry and pin, else the space
    the mapping bank pins for it."""
    registry = bridge.pipeline.registry if bridge.pipeline is not None else None
    status = registry.status.get(model) if registry is not None else None
    space = bridge.bank.spaces.get(model)
    if status is None and space is None:
        raise UnknownModel(f"{where}: no model or space {model!r}", where)
    dim, sha256 = None, None
    if status is not None:
        if status.entry.kind != "recognizer":
            raise ModelNotReady(f"{where}: {model} is a {status.entry.kind}, not a recognizer", where)
        dim, sha256 = status.entry.dim, status.entry.sha256 or status.sha256
    if space is not None:
        dim, sha256 = dim or space.dim, sha256 or space.sha256
    if dim is None or sha256 is None:
        raise ModelNotReady(
            f"{where}: {model} has no sha256 pinned in the manifest (and no file here to hash): "
            "pairs are recorded only with the exact weights that made them",
            where,
        )
    return dim, sha256


def checked_template(values: Sequence[float], dim: int, where: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    if vector.shape != (dim,):
        raise WrongDimension(f"{where}: has {len(vector)} values, the model's templates have {dim}", where)
    if not np.isfinite(vector).all():
        raise NonFinite(f"{where}: contains NaN or Inf (or a value beyond float32)", where)
    if not vector.any():
        raise ZeroVector(f"{where}: is the zero vector", where)
    return vector


def pair_rows(bridge: Bridge, pairs: Sequence[PairIn]) -> list[PairRow]:
    """The rows to store, every pair checked first (errors name the field, e.g. pairs[3].b.embedding)."""
    spaces: dict[str, tuple[int, str]] = {}
    rows = []
    for index, pair in enumerate(pairs):
        sides = []
        for name, side in (("a", pair.a), ("b", pair.b)):
            where = f"pairs[{index}].{name}"
            if side.model not in spaces:
                spaces[side.model] = template_space(bridge, side.model, f"{where}.model")
            dim, sha256 = spaces[side.model]
            sides.append((side.model, sha256, checked_template(side.embedding, dim, f"{where}.embedding")))
        if pair.a.model == pair.b.model:
            where = f"pairs[{index}].b.model"
            raise SameSpace(f"{where}: a and b are both {pair.a.model}; a pair needs two models", where)
        (model_a, sha_a, vector_a), (model_b, sha_b, vector_b) = sides
        rows.append(PairRow(pair.subject, model_a, sha_a, vector_a, model_b, sha_b, vector_b))
    return rows


def record_rows(store: PairStore, rows: list[PairRow]) -> int:
    try:
        return store.record(rows)
    except Exception as error:
        raise store_unavailable(error, "record the pairs") from error


def audit_of(request: Request) -> AuditLog | None:
    audit: AuditLog | None = getattr(request.app.state, "audit", None)
    return audit


def audit_recording(
    request: Request,
    principal: Principal,
    outcome: str,
    recorded: int,
    subject: str | None = None,
    subjects: int | None = None,
) -> None:
    """The audit record of one recording batch: how many pairs (and subjects), by which key."""
    audit = audit_of(request)
    if audit is not None:
        counts = {"pairs": recorded} if subjects is None else {"pairs": recorded, "subjects": subjects}
        event = AuditEvent(action="pairs.record", outcome=outcome, subject=subject, counts=counts)
        audit.record(event_for(request, principal.key_id, event))


# ---------------------------------------------------------------------------------------------- /embed
def recording_store(request: Request, options: EmbedOptions) -> PairStore | None:
    """The store an /embed request records into (None without `record`); 404 when recording is off."""
    return None if options.record is None else require_store(state_of(request))


def embed_and_record(
    bridge: Bridge, store: PairStore, blobs: Sequence[bytes | np.ndarray], options: EmbedOptions
) -> tuple[EmbedResponse, int]:
    """Embed, then commit one pair per image (its one face, both models) before the answer is sent."""
    assert options.record is not None and options.models is not None and len(options.models) == 2
    response = bridge.embed_images(blobs, options)
    model_a, model_b = options.models
    rows = []
    for result in response.results:
        for face in result.faces[:1]:  # largest_only / aligned: one face per image
            by_model = {e.model: e for e in face.embeddings}
            a, b = by_model[model_a], by_model[model_b]
            rows.append(
                PairRow(
                    options.record.subject,
                    a.model,
                    a.sha256,
                    np.asarray(a.embedding, np.float32),
                    b.model,
                    b.sha256,
                    np.asarray(b.embedding, np.float32),
                )
            )
    recorded = record_rows(store, rows)
    PAIRS_RECORDED.labels("/embed").inc(recorded)
    return response, recorded


# ---------------------------------------------------------------------------------------------- routes
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
    rows = pair_rows(bridge, body.pairs)
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
