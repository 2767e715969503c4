"""When to send a request again: Retry-After, backoff with jitter, and which failures are safe
to repeat."""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

RETRY_STATUSES = frozenset({429, 503})
# failures where the request most likely never reached the service, or the connection broke: all our
# calls are pure computations, so sending them again is safe. A read timeout is not among them: the
# service is still working on the request, and a second copy would only double its load.
RETRY_TRANSPORT: tuple[type[httpx.TransportError], ...] = (
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None when absent/invalid."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again: 429/503 and broken connections, at most `max_retries` more times."""

    max_retries: int = 3
    backoff: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 60.0

    def backoff_delay(self, attempt: int) -> float:
        """Exponential with a cap, half of it jittered so that many clients do not come back together."""
        ceiling = min(self.backoff_cap, self.backoff * 2.0**attempt)
        return ceiling / 2 + random.uniform(0.0, ceiling / 2)
