"""API keys at run time: who is calling, with which scopes, within which limits.

Keys come from FACEBRIDGE_API_KEYS_FILE (scoped, hashed entries written by `facebridge keys`; see
facebridge/keyfile.py) and/or FACEBRIDGE_API_KEYS (comma-separated plain keys with every scope). An
older keys file of plain keys, one per line, still loads with every scope and a start-up warning.

Per request:

- RequestGuard (facebridge/service/middleware.py) calls `ApiKeys.authenticate` once and applies the key's
  limits (429 with Retry-After); the result travels in the ASGI scope;
- each route declares the scope it needs with `needs("translate")` (a FastAPI `Security` dependency, so
  the scope is in the OpenAPI document); `require_scope` answers 401 for a missing, unknown, wrong,
  expired or revoked key and 403 naming the scope a valid key lacks, and writes refusals to the audit log.

A scoped key is `fb_<id>_<secret>`: the id finds its entry and one scrypt hash is checked, in a worker
thread, the first time; the SHA-256 of a key that verified is then remembered, so later requests cost
one SHA-256 and a dict lookup. The keys file is re-read when its size, mtime or inode change (looked at
no more than once a second, on the request path) and on SIGHUP; the new ring replaces the old one in a
single assignment, so a request in flight keeps the ring it started with. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import Request, Security
from fastapi.security import APIKeyHeader, SecurityScopes

from facebridge.exceptions import InvalidApiKey, MissingScope
from facebridge.keyfile import (
    ALL_SCOPES,
    SCOPES,
    KeyEntry,
    KeyFile,
    KeyFileError,
    KeyLimits,
    read_keys,
    split_key,
)
from facebridge.keyfile import check_hash as check_key_hash
from facebridge.metrics import KEY_REQUESTS

if TYPE_CHECKING:
    from facebridge.audit import AuditLog
    from facebridge.config import Settings

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="an API key: `facebridge keys create` (FACEBRIDGE_API_KEYS_FILE) or FACEBRIDGE_API_KEYS; "
    "each operation lists the scope it needs in its security requirement and `x-required-scopes`",
)
AUTH = "facebridge.auth"  # ASGI scope key: the AuthResult of the request (set by RequestGuard)
PRINCIPAL = "facebridge.principal"  # ASGI scope key: the Principal once a route's scope checks passed
RELOAD_CHECK_S = 1.0
ADMIN_PREFIX = "/admin/"
NO_KEY_ID = "none"  # the key_id label of refusals that name no known key


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


# ---------------------------------------------------------------------------------------------- limits
@dataclass(frozen=True, slots=True)
class Refusal:
    outcome: str  # "rate-limited" or "concurrency-limited"
    retry_after: int
    detail: str


class KeyLimiter:
    """One key id's token bucket (`rate` per second, up to `burst`) and requests in flight.

    Used on the event loop only (no lock). Lives across keys-file reloads, so a rotation keeps the
    key's bucket and in-flight count. A rate or concurrency of 0 is no limit.
    """

    __slots__ = ("_children", "burst", "in_flight", "key_id", "max_concurrent", "rate", "stamp", "tokens")

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.rate = 0.0
        self.burst = 0.0
        self.max_concurrent = 0
        self.tokens = 0.0
        self.stamp = time.monotonic()
        self.in_flight = 0
        self._children: dict[str, Any] = {}

    def configure(self, rate: float, burst: float, max_concurrent: int) -> None:
        fresh = self.rate == 0
        self.rate = float(rate)
        self.burst = float(burst) if burst else max(1.0, self.rate)
        self.max_concurrent = int(max_concurrent)
        self.tokens = self.burst if fresh else min(self.tokens, self.burst)

    @property
    def limited(self) -> bool:
        return bool(self.rate or self.max_concurrent)

    def admit(self) -> Refusal | None:
        """Take a slot and a token, or say why not (the caller counts and answers 429)."""
        if self.max_concurrent and self.in_flight >= self.max_concurrent:
            return Refusal(
                "concurrency-limited",
                1,
                f"key {self.key_id} has {self.in_flight} requests in flight; its limit is "
                f"{self.max_concurrent}",
            )
        if self.rate:
            now = time.monotonic()
            tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if tokens < 1.0:
                self.tokens = tokens
                wait = max(1, math.ceil((1.0 - tokens) / self.rate))
                return Refusal(
                    "rate-limited",
                    wait,
                    f"key {self.key_id} is limited to {self.rate:g} requests/s (burst {self.burst:g})",
                )
            self.tokens = tokens - 1.0
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight -= 1

    def count(self, outcome: str) -> None:
        child = self._children.get(outcome)
        if child is None:
            child = self._children[outcome] = KEY_REQUESTS.labels(self.key_id, outcome)
        child.inc()


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True, eq=False)
class Principal:
    """A caller whose key was accepted: its id (never the key), name, scopes and limiter."""

    key_id: str
    name: str
    scopes: frozenset[str]
    limiter: KeyLimiter

    def has(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True, eq=False)
class AuthResult:
    """What a presented key turned out to be: a Principal, or why not (and which key, when known)."""

    principal: Principal | None
    refusal: str | None = None  # missing, invalid, expired, revoked, unconfigured
    key_id: str | None = None
    detail: str = ""


MISSING = AuthResult(None, "missing", None, f"send an API key in the {API_KEY_HEADER} header")
INVALID = AuthResult(None, "invalid", None, f"the {API_KEY_HEADER} header does not hold a valid key")
UNCONFIGURED = AuthResult(
    None,
    "unconfigured",
    None,
    "the service has no API key configured; its operator must set FACEBRIDGE_API_KEYS_FILE "
    "(facebridge keys create) or FACEBRIDGE_API_KEYS",
)


# ---------------------------------------------------------------------------------------------- the ring
@dataclass(frozen=True)
class KeyRing:
    """One immutable snapshot of the accepted keys; `ApiKeys.ring` is swapped whole on reload."""

    disabled: bool = False
    entries: dict[str, KeyEntry] = field(default_factory=dict)  # scoped keys by id
    accepted: dict[str, AuthResult] = field(default_factory=dict)  # their success results, by id
    expiry: dict[str, float] = field(default_factory=dict)  # unix time a key expires at, by id
    plain: tuple[tuple[bytes, AuthResult], ...] = ()  # (SHA-256 of a plain key, its success result)
    anonymous: AuthResult | None = None  # with authentication disabled

    @property
    def configured(self) -> bool:
        return bool(self.entries or self.plain)


class ApiKeys:
    """The service's keys: the current ring, how to reload it, and the per-key limiters and caches."""

    def __init__(
        self,
        plain_keys: str | None,
        keys_file: Path | None,
        disabled: bool,
        default_limits: KeyLimits | None = None,
    ) -> None:
        self.plain_keys = [k.strip() for k in (plain_keys or "").split(",") if k.strip()]
        self.keys_file = keys_file
        self.disabled = disabled
        self.defaults = default_limits or KeyLimits()
        self.audit: AuditLog | None = None
        self._limiters: dict[str, KeyLimiter] = {}
        self._verified: dict[tuple[str, str], bytes] = {}  # (id, stored hash) -> SHA-256 of the key
        self._failed: OrderedDict[tuple[str, bytes], None] = OrderedDict()  # (stored hash, SHA-256)
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        if keys_file is not None and not keys_file.is_file():
            raise RuntimeError(f"FACEBRIDGE_API_KEYS_FILE {keys_file} is not a readable file")
        try:
            self.ring = self._build(self._read_file(), announce=True)
        except KeyFileError as exc:
            raise RuntimeError(f"FACEBRIDGE_API_KEYS_FILE: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        defaults = KeyLimits(settings.key_rate_per_s, settings.key_burst, settings.key_max_concurrent)
        return cls(settings.api_keys, settings.api_keys_file, settings.auth_disabled, defaults)

    # ------------------------------------------------------------------------------------------ loading
    def _stat(self) -> tuple[int, int, int] | None:
        if self.keys_file is None:
            return None
        try:
            st = os.stat(self.keys_file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_file(self) -> KeyFile | None:
        if self.keys_file is None:
            return None
        self._signature = self._stat()
        return read_keys(self.keys_file)

    def _limiter(self, key_id: str, limits: KeyLimits) -> KeyLimiter:
        limiter = self._limiters.get(key_id)
        if limiter is None:
            limiter = self._limiters[key_id] = KeyLimiter(key_id)

        def pick(own: float | None, default: float | None) -> float:
            return float(own if own is not None else default or 0)

        limiter.configure(
            pick(limits.rate_per_s, self.defaults.rate_per_s),
            pick(limits.burst, self.defaults.burst),
            int(pick(limits.max_concurrent, self.defaults.max_concurrent)),
        )
        return limiter

    def _build(self, keyfile: KeyFile | None, announce: bool = False) -> KeyRing:
        if self.disabled:
            if announce:
                log.warning(
                    "!!! AUTHENTICATION IS OFF (FACEBRIDGE_AUTH_DISABLED): anyone who reaches this port "
                    "can use the service. Never run this way outside a development machine. !!!"
                )
            anonymous = Principal("anonymous", "anonymous", frozenset(ALL_SCOPES), KeyLimiter("anonymous"))
            return KeyRing(disabled=True, anonymous=AuthResult(anonymous))
        every = frozenset(ALL_SCOPES)
        plain: list[tuple[bytes, AuthResult]] = []
        seen: set[bytes] = set()

        def add_plain(keys: Iterable[str], prefix: str) -> None:
            """Plain keys get every scope, default limits and an id by position; a repeat is dropped."""
            for index, key in enumerate(keys, 1):
                digest = _digest(key)
                if digest not in seen:
                    seen.add(digest)
                    key_id = f"{prefix}-{index}"
                    principal = Principal(key_id, key_id, every, self._limiter(key_id, KeyLimits()))
                    plain.append((digest, AuthResult(principal)))

        add_plain(self.plain_keys, "env")
        entries: dict[str, KeyEntry] = {}
        accepted: dict[str, AuthResult] = {}
        expiry: dict[str, float] = {}
        if keyfile is not None:
            add_plain(keyfile.plain, "line")
            for entry in keyfile.entries:
                entries[entry.id] = entry
                limiter = self._limiter(entry.id, entry.limits)
                accepted[entry.id] = AuthResult(
                    Principal(entry.id, entry.name, frozenset(entry.scopes), limiter)
                )
                if entry.expires is not None:
                    expiry[entry.id] = entry.expires.timestamp()
        live = {(k, entry.hash) for k, entry in entries.items()}
        self._verified = {k: v for k, v in self._verified.items() if k in live}
        ring = KeyRing(False, entries, accepted, expiry, tuple(plain))
        if announce:
            self._announce(ring, keyfile)
        return ring

    def _announce(self, ring: KeyRing, keyfile: KeyFile | None) -> None:
        if self.plain_keys:
            log.warning(
                "API keys: %d plain key(s) from FACEBRIDGE_API_KEYS, each with every scope (%s); "
                "scoped keys are safer: facebridge keys create --file FILE --name NAME --scope SCOPE",
                len(self.plain_keys),
                ", ".join(ALL_SCOPES),
            )
        if keyfile is not None and keyfile.legacy:
            log.warning(
                "FACEBRIDGE_API_KEYS_FILE %s holds %d plain key(s), one per line: each has every scope and "
                "is stored in clear; replace them with scoped, hashed keys: facebridge keys create --file "
                "NEW.json --name NAME --scope SCOPE (then point FACEBRIDGE_API_KEYS_FILE at NEW.json)",
                self.keys_file,
                len(keyfile.plain),
            )
        if keyfile is not None and keyfile.entries:
            states = [e.state() for e in keyfile.entries]
            log.info(
                "API keys file %s: %d active, %d expired, %d revoked",
                self.keys_file,
                states.count("active"),
                states.count("expired"),
                states.count("revoked"),
            )
        if not ring.configured:
            log.error(
                "no API key configured (FACEBRIDGE_API_KEYS_FILE or FACEBRIDGE_API_KEYS): every request "
                "to a protected route is refused with 401"
            )

    def reload(self, force: bool = False, cause: str = "changed") -> bool:
        """Re-read the keys file if it changed (or `force`); True when a new ring was swapped in.

        A file that cannot be read or parsed leaves the current ring serving, and says so in the log.
        """
        if self.keys_file is None or self.disabled:
            return False
        with self._lock:
            signature = self._stat()
            if not force and signature == self._signature:
                return False
            try:
                keyfile = self._read_file()
                ring = self._build(keyfile)
            except (KeyFileError, OSError) as exc:
                self._signature = signature  # do not retry every second until it changes again
                log.error(
                    "API keys file %s not reloaded, the previous keys stay in force: %s", self.keys_file, exc
                )
                self._audit_reload("failed", cause, None, str(exc))
                return False
            self.ring = ring  # one assignment: requests in flight keep the ring they started with
        assert keyfile is not None
        states = [e.state() for e in keyfile.entries]
        log.info(
            "API keys file %s reloaded (%s): %d active, %d expired, %d revoked, %d plain",
            self.keys_file,
            cause,
            states.count("active"),
            states.count("expired"),
            states.count("revoked"),
            len(keyfile.plain),
        )
        counts = {
            "active": states.count("active"),
            "revoked": states.count("revoked"),
            "plain": len(keyfile.plain),
        }
        self._audit_reload("applied", cause, counts, None)
        return True

    def _audit_reload(
        self, outcome: str, cause: str, counts: dict[str, int] | None, detail: str | None
    ) -> None:
        if self.audit is not None:
            from facebridge.audit import AuditEvent

            route = "SIGHUP" if cause == "SIGHUP" else None
            self.audit.record(
                AuditEvent(
                    action="keys.reload",
                    outcome=outcome,
                    route=route,
                    file=str(self.keys_file),
                    counts=counts,
                    detail=detail,
                )
            )

    def maybe_reload(self) -> None:
        """The cheap check on the request path: one stat() at most once a second."""
        if self.keys_file is None:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + RELOAD_CHECK_S
        if self._stat() != self._signature:
            self.reload()

    # ------------------------------------------------------------------------------------------ checking
    async def authenticate(self, presented: str | None) -> AuthResult:
        """Who `presented` is: a Principal, or why the key is refused. Never raises, never logs the key."""
        self.maybe_reload()
        ring = self.ring
        if ring.anonymous is not None:
            return ring.anonymous
        if not presented:
            return MISSING if ring.configured else UNCONFIGURED
        digest = _digest(presented)
        parts = split_key(presented)
        entry = ring.entries.get(parts[0]) if parts is not None else None
        if entry is not None:
            if not await self._check(entry, presented, digest):
                return INVALID
            if entry.revoked:
                return AuthResult(None, "revoked", entry.id, f"key {entry.id} ({entry.name}) was revoked")
            expires = ring.expiry.get(entry.id)
            if expires is not None and time.time() >= expires:
                return AuthResult(None, "expired", entry.id, f"key {entry.id} ({entry.name}) has expired")
            return ring.accepted[entry.id]
        found = INVALID
        for known, result in ring.plain:  # no early exit: the time taken does not say which key matched
            if hmac.compare_digest(digest, known):
                found = result
        return found

    async def _check(self, entry: KeyEntry, presented: str, digest: bytes) -> bool:
        remembered = self._verified.get((entry.id, entry.hash))
        if remembered is not None and hmac.compare_digest(remembered, digest):
            return True
        failure = (entry.hash, digest)
        if failure in self._failed:
            return False
        ok = await anyio.to_thread.run_sync(check_key_hash, presented, entry.hash)
        if ok:
            self._verified[(entry.id, entry.hash)] = digest
        else:
            self._failed[failure] = None
            while len(self._failed) > 4096:
                self._failed.popitem(last=False)
        return ok


# ---------------------------------------------------------------------------------------------- routes
def needs(*scopes: str) -> Any:
    """What a route declares: `dependencies=[needs("translate")]`, or as a parameter to get the caller
    (`principal: Principal = needs("pairs:erase")`). No scope: any valid key."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; known: {', '.join(SCOPES)}")
    return Security(require_scope, scopes=list(scopes))


async def require_scope(
    security_scopes: SecurityScopes, request: Request, presented: str | None = Security(api_key_header)
) -> Principal:
    """401 unless the request carries a valid key, 403 unless that key has every scope the route needs."""
    auth: AuthResult | None = request.scope.get(AUTH)
    keys: ApiKeys = request.app.state.api_keys
    if auth is None:  # a route RequestGuard does not look at (e.g. /metrics when it is not public)
        auth = await keys.authenticate(presented)
    principal = auth.principal
    if principal is None:
        _refused(request, auth.key_id, auth.refusal or "invalid", "unauthorized", auth.detail)
        raise InvalidApiKey(auth.detail)
    needed = security_scopes.scopes
    if request.scope["path"].startswith(ADMIN_PREFIX) and "admin" not in needed:
        needed = [*needed, "admin"]  # anything under /admin is admin's, whatever the route declares
    for scope in needed:
        if scope not in principal.scopes:
            detail = (
                f"this route needs scope {scope!r}, which key {principal.key_id} ({principal.name}) lacks "
                f"(it has: {', '.join(sorted(principal.scopes)) or 'none'})"
            )
            _refused(request, principal.key_id, "forbidden", "forbidden", detail, principal)
            raise MissingScope(detail, scope)
    if request.scope.get(PRINCIPAL, principal) is principal:  # not after a refusal of this request
        request.scope[PRINCIPAL] = principal  # RequestGuard counts it `served` once the answer is sent
    return principal


def principal_of(request: Request) -> Principal:
    """The caller of a request whose scope checks passed (`needs(...)` on the route, a LeanRoute's too)."""
    principal: Principal = request.scope[PRINCIPAL]
    return principal


def require_also(request: Request, principal: Principal, scope: str, why: str) -> None:
    """A second scope a request needs because of what it asks (e.g. /embed with `record`)."""
    if not principal.has(scope):
        detail = (
            f"{why} needs scope {scope!r}, which key {principal.key_id} ({principal.name}) lacks "
            f"(it has: {', '.join(sorted(principal.scopes)) or 'none'})"
        )
        _refused(request, principal.key_id, "forbidden", "forbidden", detail, principal)
        raise MissingScope(detail, scope)


def _refused(
    request: Request,
    key_id: str | None,
    outcome: str,
    kind: str,
    detail: str,
    principal: Principal | None = None,
) -> None:
    if principal is not None:
        principal.limiter.count(outcome)
        request.scope[PRINCIPAL] = None  # refused: not counted as served
    else:
        KEY_REQUESTS.labels(key_id or NO_KEY_ID, outcome).inc()
    audit: AuditLog | None = getattr(request.app.state, "audit", None)
    if audit is not None:
        from facebridge.audit import AuditEvent, event_for

        audit.record(
            event_for(request, key_id, AuditEvent(action=f"auth.{kind}", outcome=outcome, detail=detail))
        )
