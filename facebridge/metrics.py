"""Prometheus metrics: requests and latencies per route, batch sizes, inference time, maps, errors.

Process-wide collectors (prometheus_client's default registry). With several uvicorn workers each
process counts its own requests; scrape each worker or run one worker per container. Only the
collectors live here, so the library (a recognizer timing its runs) needs no web framework; the
middleware that times requests and the /metrics endpoint are the service's (facebridge/service/middleware.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("facebridge_requests_total", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram(
    "facebridge_request_duration_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "facebridge_batch_size",
    "items per request: embeddings (/translate), pairs (/verify), images (/embed)",
    ["route"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384, 65536, 262144),
)
INFERENCE = Histogram(
    "facebridge_inference_seconds",
    "onnxruntime time per recognizer batch",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ERRORS = Counter("facebridge_errors_total", "problem+json answers by problem type", ["type"])
KEY_REQUESTS = Counter(
    "facebridge_key_requests_total",
    "requests per API key id (never the key) and outcome: served (scope check passed), forbidden (a "
    "scope missing), rate-limited, concurrency-limited (429), expired, revoked; key_id none: missing or "
    "invalid keys",
    ["key_id", "outcome"],
)
AUDIT_EVENTS = Counter(
    "facebridge_audit_events_total", "audit log lines written, by action and outcome", ["action", "outcome"]
)
AUDIT_FAILURES = Counter(
    "facebridge_audit_failures_total", "audit records that could not be written", ["sink"]
)
MAPS_LOADED = Gauge("facebridge_maps_loaded", "map files loaded and serving")
MAPS_REFUSED = Gauge("facebridge_maps_refused", "map files refused at load")
MODELS_LOADED = Gauge("facebridge_models_loaded", "model files loaded")
ESTIMATED_FAR = Gauge(
    "facebridge_estimated_far",
    "FAR the shipped raw threshold is estimated to reach on the loaded cohort's population",
    ["comparison", "operating_point"],
)
NOMINAL_FAR = Gauge(
    "facebridge_nominal_far",
    "FAR the shipped raw threshold was calibrated for",
    ["comparison", "operating_point"],
)


def publish_drift(estimates: list[tuple[str, str, float, float]]) -> None:
    """(comparison, operating point, estimated FAR, nominal FAR) rows replace the previous ones."""
    ESTIMATED_FAR.clear()
    NOMINAL_FAR.clear()
    for comparison, point, estimated, nominal in estimates:
        ESTIMATED_FAR.labels(comparison, point).set(estimated)
        NOMINAL_FAR.labels(comparison, point).set(nominal)


_BATCH_CHILDREN: dict[str, Any] = {}


def observe_batch(route: str, size: int) -> None:
    child = _BATCH_CHILDREN.get(route)
    if child is None:
        child = _BATCH_CHILDREN[route] = BATCH_SIZE.labels(route)
    child.observe(size)


def track_inventory(
    maps_loaded: Callable[[], float], maps_refused: Callable[[], float], models: Callable[[], float]
) -> None:
    """Gauges read the service state when scraped, so they are never stale."""
    MAPS_LOADED.set_function(maps_loaded)
    MAPS_REFUSED.set_function(maps_refused)
    MODELS_LOADED.set_function(models)
