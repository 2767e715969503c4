"""API keys: who may call the service.

Keys come from FACEBRIDGE_API_KEYS (comma-separated) and/or FACEBRIDGE_API_KEYS_FILE (one per line,
`#` comments), so several can be valid at once while one is rotated out. Only SHA-256 digests are
kept in memory and a presented key is compared against every digest in constant time. Keys are never
logged. With no key configured every protected route answers 401 (fail closed) unless authentication
is switched off explicitly with FACEBRIDGE_AUTH_DISABLED=true, which is logged loudly at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from facebridge.errors import Problem

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="one of the keys in FACEBRIDGE_API_KEYS(_FILE)"
)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class KeyRing:
    digests: tuple[bytes, ...]
    disabled: bool = False

    @classmethod
    def from_sources(cls, keys: str | None, keys_file: Path | None, disabled: bool) -> KeyRing:
        found = [k.strip() for k in (keys or "").split(",") if k.strip()]
        if keys_file is not None:
            if not keys_file.is_file():
                raise RuntimeError(f"FACEBRIDGE_API_KEYS_FILE {keys_file} is not a readable file")
            lines = keys_file.read_text().splitlines()
            found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        ring = cls(tuple(dict.fromkeys(_digest(k) for k in found)), disabled)
        if disabled:
            log.warning(
                "!!! AUTHENTICATION IS OFF (FACEBRIDGE_AUTH_DISABLED): anyone who reaches this port "
                "can use the service. Never run this way outside a development machine. !!!"
            )
        elif not ring.digests:
            log.error(
                "no API key configured (FACEBRIDGE_API_KEYS or FACEBRIDGE_API_KEYS_FILE): every request "
                "to a protected route is refused with 401"
            )
        else:
            log.info("API keys: %d configured", len(ring.digests))
        return ring

    def accepts(self, presented: str | None) -> bool:
        if self.disabled:
            return True
        if not presented:
            return False
        digest = _digest(presented)
        matched = False
        for known in self.digests:  # no early exit: the time taken does not depend on which key matched
            matched |= hmac.compare_digest(digest, known)
        return matched


async def require_api_key(request: Request, presented: str | None = Security(api_key_header)) -> None:
    ring: KeyRing = request.app.state.key_ring
    if ring.accepts(presented):
        return
    if not ring.digests and not ring.disabled:
        detail = "the service has no API key configured; its operator must set FACEBRIDGE_API_KEYS"
    elif presented:
        detail = f"the {API_KEY_HEADER} header does not hold a valid key"
    else:
        detail = f"send an API key in the {API_KEY_HEADER} header"
    raise Problem(401, "unauthorized", "Missing or invalid API key", detail)
