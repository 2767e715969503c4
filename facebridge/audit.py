"""The audit trail: who erased, recorded, reloaded or was refused, when, and how much it touched.

One JSON object per line, appended to FACEBRIDGE_AUDIT_LOG (default ./.facebridge/audit.log in a
source checkout, else the per-user data folder): the file is opened with O_APPEND and mode 0600, and
every line goes out in a single write() as soon as it is recorded, so lines of several workers never
interleave and nothing waits in a buffer. With a pair store configured, the same records are also
inserted into its `audit_log` table (migration 2; SQLite and PostgreSQL refuse UPDATE and DELETE on
it) by one background thread, in batches.

    {"time": "2026-11-30T10:00:00.123Z", "key_id": "3f9a1c2e", "action": "pairs.erase",
     "route": "/pairs", "method": "DELETE", "subject": "u-1842", "file": null, "outcome": "ok",
     "counts": {"deleted": 3}, "detail": null, "request_id": "9b2c..."}

Actions: `pairs.erase`, `pairs.record` (POST /pairs and /embed with `record`), `mappings.reload` (maps,
cohorts and calibrations: POST /admin/reload-mappings and SIGHUP), `keys.reload` (the keys file
changed), `auth.unauthorized` (401) and `auth.forbidden` (403). A key is never written, only its id.
`facebridge audit` reads the file or the table.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facebridge.logs import request_id
from facebridge.metrics import AUDIT_EVENTS, AUDIT_FAILURES

if TYPE_CHECKING:
    from starlette.requests import Request

    from facebridge.config import Settings
    from facebridge.mapping.bank import MappingBank
    from facebridge.pairs.store import PairStore

log = logging.getLogger(__name__)

FIELDS = (  # an audit record's fields, in the order the file and the audit_log table keep them
    "time",
    "key_id",
    "action",
    "route",
    "method",
    "subject",
    "file",
    "outcome",
    "counts",
    "detail",
    "request_id",
)
QUEUE_LIMIT = 10_000
BATCH = 256


@dataclass(frozen=True)
class AuditEvent:
    action: str
    outcome: str
    key_id: str | None = None
    route: str | None = None
    method: str | None = None
    subject: str | None = None
    file: str | None = None
    counts: Mapping[str, int] | None = None
    detail: str | None = None
    request_id: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        moment = self.time.astimezone(UTC)
        return {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "key_id": self.key_id,
            "action": self.action,
            "route": self.route,
            "method": self.method,
            "subject": self.subject,
            "file": self.file,
            "outcome": self.outcome,
            "counts": dict(self.counts) if self.counts is not None else None,
            "detail": self.detail,
            "request_id": self.request_id,
        }


def event_for(request: Request, key_id: str | None, event: AuditEvent) -> AuditEvent:
    """`event` with the request's route template, method, request id and the caller's key id."""
    route = request.scope.get("route")
    rid = request_id.get()
    return replace(
        event,
        key_id=key_id,
        route=getattr(route, "path", None) or request.url.path,
        method=request.method,
        request_id=None if rid == "-" else rid,
    )


class AuditLog:
    """Appends audit records to the file and, when attached, to the pair store's `audit_log` table."""

    def __init__(self, path: Path | None, required: bool = True) -> None:
        self.path = path
        self.required = required
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._writer: _DatabaseWriter | None = None

    def open(self) -> None:
        """Open (create) the file now: a path that cannot be written stops the service at start when it
        was asked for (`required`); the default path is given up with an error in the log instead."""
        if self.path is None or self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            if self.required:
                raise
            AUDIT_FAILURES.labels("file").inc()
            log.error(
                "audit log %s cannot be written (%s): no audit file; set FACEBRIDGE_AUDIT_LOG to a "
                "writable path (records still go to the pair store's audit_log table when one is set)",
                self.path,
                exc,
            )
            self.path = None
            return
        log.info("audit log: %s", self.path)

    def attach_store(self, store: PairStore | None) -> None:
        """Also write every record into `store`'s audit_log table (a background thread, in batches)."""
        if store is not None and self._writer is None:
            self._writer = _DatabaseWriter(store)
            self._writer.start()

    def record(self, event: AuditEvent) -> None:
        """Write one record: the file line now (one write), the table row soon. Never raises."""
        line = (json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        AUDIT_EVENTS.labels(event.action, event.outcome).inc()
        if self.path is not None:
            try:
                with self._lock:
                    if self._fd is None:
                        self.open()
                    assert self._fd is not None
                    view = memoryview(line)
                    while view:  # one write for any sane line; the loop only guards a short write
                        view = view[os.write(self._fd, view) :]
            except OSError as exc:
                AUDIT_FAILURES.labels("file").inc()
                log.error("audit log %s: cannot append a record (%s): %s", self.path, event.action, exc)
        if self._writer is not None:
            self._writer.put(event)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record so far is in the table (tests, shutdown); True when it is."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _DatabaseWriter(threading.Thread):
    """Inserts queued records into the pair store's audit_log table, up to BATCH per transaction."""

    def __init__(self, store: PairStore) -> None:
        super().__init__(name="facebridge-audit-db", daemon=True)
        self.store = store
        self.queue: queue.Queue[AuditEvent | threading.Event | None] = queue.Queue(QUEUE_LIMIT)

    def put(self, event: AuditEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            AUDIT_FAILURES.labels("database").inc()
            log.error("audit log table: %d records waiting, one dropped (%s)", QUEUE_LIMIT, event.action)

    def flush(self, timeout: float) -> bool:
        done = threading.Event()
        self.queue.put(done, timeout=timeout)
        return done.wait(timeout)

    def stop(self) -> None:
        self.queue.put(None)
        self.join(30.0)

    def run(self) -> None:
        stopping = False
        while not stopping:
            items = [self.queue.get()]
            while len(items) < BATCH:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            events = [i for i in items if isinstance(i, AuditEvent)]
            if events:
                try:
                    self.store.append_audit([e.to_json() | {"time": e.time} for e in events])
                except Exception as exc:  # the file has every line; the table must not take the service down
                    AUDIT_FAILURES.labels("database").inc(len(events))
                    log.error(
                        "audit log table: %d record(s) not written: %s", len(events), type(exc).__name__
                    )
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
                stopping = stopping or item is None


# ---------------------------------------------------------------------------------------------- reading
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `12h`, `7d`, `2w` before now, or an ISO date (UTC midnight) / date-time."""
    from facebridge.keyfile import parse_time

    relative = _RELATIVE.match(text.strip())
    if relative:
        delta = timedelta(**{_UNITS[relative[2]]: float(relative[1])})
        return (now or datetime.now(UTC)) - delta
    return parse_time(text, "--since")


def record_time(record: Mapping[str, Any]) -> datetime:
    raw = record.get("time")
    if isinstance(raw, datetime):
        return raw.astimezone(UTC)
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))


def matches(
    record: Mapping[str, Any],
    since: datetime | None = None,
    action: str | None = None,
    key_id: str | None = None,
) -> bool:
    """`action` matches itself and what it prefixes at a dot: `pairs` matches pairs.erase."""
    if action and not (
        record.get("action") == action or str(record.get("action", "")).startswith(action + ".")
    ):
        return False
    if key_id and record.get("key_id") != key_id:
        return False
    return since is None or record_time(record) >= since


def read_file(
    path: Path, since: datetime | None = None, action: str | None = None, key_id: str | None = None
) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d is not a JSON line; skipped", path, number)
                continue
            if matches(record, since, action, key_id):
                yield record


def read_database(
    where: str | Path, since: datetime | None = None, action: str | None = None, key_id: str | None = None
) -> list[dict[str, Any]]:
    from facebridge.pairs.store import open_store

    store = open_store(where)
    try:
        return [r for r in store.read_audit(since) if matches(r, None, action, key_id)]
    finally:
        store.close()


def as_text(records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Aligned columns for a terminal: time, key, action, outcome, route, subject or file, counts."""
    yield f"{'time (UTC)':<24} {'key':<10} {'action':<18} {'outcome':<20} {'route':<24} subject/file  counts"
    for r in records:
        route = f"{r.get('method') or ''} {r.get('route') or ''}".strip()
        counts = r.get("counts")
        if isinstance(counts, str):
            counts = json.loads(counts)
        counted = ", ".join(f"{k}={v}" for k, v in (counts or {}).items())
        what = r.get("subject") or r.get("file") or ""
        moment = record_time(r).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        yield (
            f"{moment:<24} {r.get('key_id') or '-':<10} {r.get('action'):<18} {r.get('outcome'):<20} "
            f"{route:<24} {what}  {counted}".rstrip()
        )


def reload_event(
    bank: MappingBank | None,
    settings: Settings,
    outcome: str,
    route: str | None = None,
    detail: str | None = None,
) -> AuditEvent:
    """The record of a reload of the mappings folder, its cohorts and the deployment calibration."""
    counts = None
    if bank is not None:
        counts = {
            "maps": len(bank.maps),
            "refused": len(bank.refused),
            "cohorts": len(bank.scoring.cohorts),
            "calibration_sets": len(bank.scoring.sets),
        }
    extra = [f"cohort_dir={settings.cohort_dir}"] if settings.cohort_dir else []
    if settings.calibration_file:
        extra.append(f"calibration_file={settings.calibration_file}")
    note = "; ".join(filter(None, [detail, *extra])) or None
    return AuditEvent(
        action="mappings.reload",
        outcome=outcome,
        route=route,
        file=str(settings.mappings_dir),
        counts=counts,
        detail=note,
    )
