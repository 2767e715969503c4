"""Every problem type the service answers with: its code, HTTP status and title, in one table.

The service (facebridge/service/errors.py) answers errors with these codes and no others, and the
client (facebridge/client/errors.py) chooses its exception class from the same table, so the two cannot
drift apart. Two parts:

- DOMAIN_PROBLEMS: what each library exception (facebridge/exceptions.py) becomes; the library and
  the HTTP answers report a failure the same way.
- HTTP_PROBLEMS: what only the HTTP layer refuses (a body, a content type, a rate, a store it cannot
  reach), by code.

Plain data with no web framework, so the client can import it.
"""

from __future__ import annotations

from typing import NamedTuple

from facebridge import exceptions as ex

PROBLEM_TYPE_PREFIX = "urn:facebridge:problem:"


class ProblemType(NamedTuple):
    status: int
    code: str
    title: str


DOMAIN_PROBLEMS: dict[type[ex.FacebridgeError], ProblemType] = {
    ex.FacebridgeError: ProblemType(422, "invalid-request", "Request cannot be served"),
    ex.UnknownModel: ProblemType(404, "unknown-model", "Unknown model"),
    ex.ModelNotReady: ProblemType(409, "model-unavailable", "Model unavailable"),
    ex.FullNetworkUnavailable: ProblemType(409, "full-network-unavailable", "Full-network mode unavailable"),
    ex.NoMapPath: ProblemType(409, "no-map-path", "No map between these spaces"),
    ex.NotCalibrated: ProblemType(409, "not-calibrated", "No calibrated threshold"),
    ex.SameSpace: ProblemType(422, "same-space", "Nothing to translate"),
    ex.NotReady: ProblemType(503, "not-ready", "Models are not loaded"),
    ex.BatchTooLarge: ProblemType(413, "batch-too-large", "Too many items in one request"),
    ex.InvalidEmbedding: ProblemType(422, "invalid-embedding", "Invalid embedding"),
    ex.EmptyBatch: ProblemType(422, "empty-batch", "Invalid embedding"),
    ex.WrongDimension: ProblemType(422, "wrong-dim", "Invalid embedding"),
    ex.NonFinite: ProblemType(422, "non-finite", "Invalid embedding"),
    ex.ZeroVector: ProblemType(422, "zero-vector", "Invalid embedding"),
    ex.NoFaceFound: ProblemType(422, "no-face", "No face found"),
    ex.InvalidNpy: ProblemType(422, "invalid-npy", "Body is not a usable .npy array"),
    ex.InvalidBase64: ProblemType(422, "invalid-base64", "Image is not valid base64"),
    ex.ImageError: ProblemType(422, "invalid-image", "Image rejected"),
    ex.UndecodableImage: ProblemType(422, "undecodable-image", "Image rejected"),
    ex.ImageTooLarge: ProblemType(413, "image-too-large", "Image too large"),
    ex.AccessDenied: ProblemType(403, "forbidden", "Forbidden"),
    ex.InvalidApiKey: ProblemType(401, "unauthorized", "Missing or invalid API key"),
    ex.MissingScope: ProblemType(403, "missing-scope", "API key lacks the scope this route needs"),
}

HTTP_PROBLEMS: dict[str, ProblemType] = {
    problem.code: problem
    for problem in (
        # the request itself
        ProblemType(422, "validation-error", "Request is not valid"),
        ProblemType(400, "bad-content-length", "Body length differs from Content-Length"),
        ProblemType(413, "request-too-large", "Request too large"),
        ProblemType(415, "unsupported-media-type", "Unsupported content type"),
        ProblemType(404, "not-found", "Not found"),
        ProblemType(405, "method-not-allowed", "Method not allowed"),
        ProblemType(400, "http-error", "HTTP error"),
        # limits
        ProblemType(429, "too-many-requests", "Too many requests"),
        ProblemType(503, "time-budget-exceeded", "Time budget exceeded"),
        # what a route asks for and the service does not have
        ProblemType(404, "unknown-map", "No such map"),
        ProblemType(404, "no-evaluation", "No evaluation for this map"),
        ProblemType(409, "no-confidence", "No confidence predictor"),
        ProblemType(404, "pairs-disabled", "Pair recording is off"),
        # what the service cannot reach or load
        ProblemType(503, "pairs-unavailable", "Pair store unavailable"),
        ProblemType(503, "migrations-unavailable", "Migration jobs unavailable"),
        ProblemType(503, "mappings-failed", "Mappings could not be loaded"),
        ProblemType(503, "models-failed", "Models could not be loaded"),
        ProblemType(500, "evaluation-unreadable", "Evaluation file unreadable"),
        ProblemType(500, "internal-error", "Internal error"),
    )
}

PROBLEMS_BY_CODE: dict[str, ProblemType] = {
    **{problem.code: problem for problem in DOMAIN_PROBLEMS.values()},
    **HTTP_PROBLEMS,
}
"""Every code the service answers with (each code appears once in the two tables)."""
