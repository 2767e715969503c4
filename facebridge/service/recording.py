"""Recording into the pair store from a request, shared by POST /pairs and /embed with `record`: the
store the service holds (404 `pairs-disabled` without one), a store failure as 503 `pairs-unavailable`
(its message trimmed so that no subject id reaches the log), the audit record of each batch, the
counters. Which rows a request makes is the library's (facebridge/pairs/recording.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from fastapi import Request
from prometheus_client import Counter

from facebridge.audit import AuditEvent, AuditLog, event_for
from facebridge.bridge import Bridge
from facebridge.pairs.recording import rows_of_embedding
from facebridge.pairs.rows import PairRow
from facebridge.pairs.store import PairStore
from facebridge.schemas.embed import EmbedOptions, EmbedResponse
from facebridge.service.errors import Problem
from facebridge.service.security import Principal
from facebridge.service.state import ServiceState, state_of

log = logging.getLogger(__name__)

PAIRS_RECORDED = Counter(
    "facebridge_pairs_recorded_total", "template pairs committed to the pair store", ["route"]
)
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


def recording_store(request: Request, options: EmbedOptions) -> PairStore | None:
    """The store an /embed request records into (None without `record`); 404 when recording is off."""
    return None if options.record is None else require_store(state_of(request))


def embed_and_record(
    bridge: Bridge, store: PairStore, blobs: Sequence[bytes | np.ndarray], options: EmbedOptions
) -> tuple[EmbedResponse, int]:
    """Embed, then commit one pair per image (its one face, both models) before the answer is sent."""
    response = bridge.embed_images(blobs, options)
    recorded = record_rows(store, rows_of_embedding(response, options))
    PAIRS_RECORDED.labels("/embed").inc(recorded)
    return response, recorded
