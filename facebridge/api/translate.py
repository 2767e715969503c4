"""POST /translate: embeddings of one model carried into another model's space.

JSON in, JSON out; or a .npy body (`application/x-npy`, float32 (n, d)) in and .npy out for bulk work,
with the source and target in the query string and the path in response headers. With `?confidence=true`
the bulk answer is an uncompressed .npz (`application/x-npz`) holding `embeddings` and `confidence`
(each row's expected cosine with the target model's own embedding), as `np.load` reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from facebridge.api.body import read_body
from facebridge.api.lean import LeanRoute
from facebridge.api.openapi import request_body
from facebridge.bridge import Bridge, Translation
from facebridge.metrics import observe_batch
from facebridge.npy import NPY, NPZ, npy_buffer, npz_body, read_embeddings
from facebridge.schemas.translate import TranslateRequest, TranslateResponse
from facebridge.service.errors import (
    PROBLEM_RESPONSES,
    FieldError,
    Problem,
    check_batch_size,
    validation_problem,
)
from facebridge.service.security import needs
from facebridge.service.state import get_bridge, state_of
from facebridge.vectors import check_matrix, parse_matrix

router = APIRouter(tags=["translate"], route_class=LeanRoute)

STREAM_MIN_ROWS = 4096  # bulk answers of more rows are mapped and sent block by block (TranslatedRows)
STREAM_BLOCK_ROWS = 2048  # as fast as 4096 and bounds a residual map's temporaries (3 MB at h = 256)


OPENAPI_BODY: dict[str, Any] = {
    "parameters": [
        *(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "with an application/x-npy body",
            }
            for name in ("source", "target")
        ),
        {
            "name": "confidence",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": "with an application/x-npy body: answer application/x-npz with arrays "
            "`embeddings` and `confidence` (409 when a map of the path has no confidence predictor)",
        },
    ],
    **request_body(
        {
            "application/json": TranslateRequest,
            NPY: {"type": "string", "format": "binary", "description": ".npy float32 array (n, source dim)"},
        }
    ),
}


@router.post(
    "/translate",
    response_model=TranslateResponse,
    summary="Carry embeddings from one model's space into another's",
    description="JSON: `{source, target, embeddings}`; the answer's `confidence` gives, per row, the "
    "expected cosine between the translated template and the target model's own embedding of the same "
    "photo (null when a map of the path has no confidence predictor). Bulk: POST a .npy float32 (n, d) "
    "body with `Content-Type: application/x-npy` and `?source=…&target=…`; the answer is .npy too, with "
    "the maps used in the `X-Facebridge-Maps` header. Add `&confidence=true` for an uncompressed .npz "
    "(`application/x-npz`, read by `np.load`) holding `embeddings` (float32 (n, d)) and `confidence` "
    "(float32 (n,)). Re-enrol the least confident templates first, or hold them to a higher threshold.",
    openapi_extra=OPENAPI_BODY,
    responses={
        **PROBLEM_RESPONSES,
        200: {"content": {NPY: {}, NPZ: {}}},
        415: {"description": "Unsupported content type"},
    },
    dependencies=[needs("translate")],
)
async def translate(request: Request) -> Response:
    bridge = await get_bridge(request)
    settings = state_of(request).settings
    content_type = request.headers.get("content-type", "")
    binary = content_type.startswith(NPY)
    body = await read_body(request, settings.max_request_bytes, binary)
    if binary:
        return await _translate_npy(request, bridge, body)
    if not content_type.startswith("application/json"):
        raise Problem.of("unsupported-media-type", f"send application/json or {NPY}")
    assert not isinstance(body, memoryview)  # read_body gives JSON a bytearray (or bytes)
    try:
        payload = TranslateRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_problem(exc.errors()) from exc
    path = bridge.map_path(payload.source, payload.target)
    rows = len(payload.embeddings)
    observe_batch("/translate", rows)
    _check_rows(rows, settings.max_embeddings_per_request, "embeddings")

    def run() -> Translation:
        dim = path.maps[0].meta.source.dim
        matrix = parse_matrix(payload.embeddings, "embeddings", dim, settings.max_embeddings_per_request)
        return bridge.translate_along(path, matrix)

    # small products finish faster than a hop to a worker thread
    result = run() if rows <= 64 else await run_in_threadpool(run)
    answer = {
        "source": result.source,
        "target": result.target,
        "composed": result.composed,
        "maps": [m.model_dump() for m in result.maps],
        "embeddings": result.embeddings,
        "confidence": result.confidence,
    }
    return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


async def _translate_npy(request: Request, bridge: Bridge, body: bytes | bytearray | memoryview) -> Response:
    """The bulk path: .npy in, .npy out, the result written straight into the response buffer."""
    settings = state_of(request).settings
    source, target = request.query_params.get("source"), request.query_params.get("target")
    if not source or not target:
        missing = "source" if not source else "target"
        raise Problem.of(
            "validation-error",
            f"query parameter {missing} is required",
            [FieldError(field=missing, message="required with an application/x-npy body")],
        )
    path = bridge.map_path(source, target)
    with_confidence = _flag(request.query_params.get("confidence"), "confidence")
    if with_confidence and not path.has_confidence:
        lacking = [m.id for m in path.maps if not m.has_confidence]
        raise Problem.of(
            "no-confidence",
            f"map(s) {', '.join(lacking)} carry no confidence predictor; ask without confidence=true",
            [FieldError(field="confidence", message="the map path has no confidence predictor")],
        )
    matrix = check_matrix(
        read_embeddings(body), "body", path.maps[0].meta.source.dim, settings.max_embeddings_per_request
    )
    observe_batch("/translate", len(matrix))
    buffer, out = npy_buffer(len(matrix), path.maps[-1].meta.target.dim)
    headers = {
        "X-Facebridge-Maps": ",".join(path.ids),
        "X-Facebridge-Composed": str(path.composed).lower(),
    }
    if not with_confidence and len(matrix) > STREAM_MIN_ROWS:
        return TranslatedRows(buffer, out, lambda rows: path.apply(matrix[rows], out[rows]), headers)
    if len(matrix) <= 4096:  # small products finish faster than a hop to a worker thread
        result = bridge.translate_along(path, matrix, out, with_confidence)
    else:
        result = await run_in_threadpool(bridge.translate_along, path, matrix, out, with_confidence)
    if with_confidence and result.confidence is not None:
        return Response(npz_body(buffer, result.confidence), media_type=NPZ, headers=headers)
    return Response(buffer, media_type=NPY, headers=headers)


class TranslatedRows(Response):
    """The bulk .npy answer, sent block by block while the rows are translated.

    Every block of rows is mapped in a worker thread straight into its place in the response buffer
    (`out`, a view of `buffer`) and sent as soon as it is ready, while the next block is mapped: the
    product overlaps the transfer instead of preceding it. The request was checked in full before, so
    nothing can fail once the status line is out (it goes out with the first block); Content-Length is
    the whole .npy file's. As for any answer, a time budget (FACEBRIDGE_REQUEST_TIME_BUDGET_S) spent
    before the status line is a 503, and one spent while the answer is being sent ends the connection.
    """

    def __init__(
        self,
        buffer: memoryview,
        out: np.ndarray,
        translate_rows: Callable[[slice], object],
        headers: dict[str, str],
        block_rows: int | None = None,
    ) -> None:
        super().__init__(memoryview(buffer), media_type=NPY, headers=headers)
        self.out = out
        self.translate_rows = translate_rows
        self.block_rows = block_rows or STREAM_BLOCK_ROWS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        view = memoryview(self.body)
        rows = len(self.out)
        row_bytes = self.out.strides[0]
        data_start = len(view) - rows * row_bytes  # the .npy header goes out with the first block
        blocks = [slice(a, min(a + self.block_rows, rows)) for a in range(0, rows, self.block_rows)]
        pending = asyncio.ensure_future(run_in_threadpool(self.translate_rows, blocks[0]))
        sent = 0
        try:
            for index, block in enumerate(blocks):
                await pending
                last = index + 1 == len(blocks)
                if not last:
                    pending = asyncio.ensure_future(run_in_threadpool(self.translate_rows, blocks[index + 1]))
                if index == 0:  # the status line goes out with the first block, once that is mapped
                    status, headers = self.status_code, self.raw_headers
                    await send({"type": "http.response.start", "status": status, "headers": headers})
                end = data_start + block.stop * row_bytes
                await send({"type": "http.response.body", "body": view[sent:end], "more_body": not last})
                sent = end
        finally:
            if not pending.done():  # the client went away: its thread finishes alone, nobody waits
                pending.cancel()


def _flag(value: str | None, field: str) -> bool:
    if value is None or value.lower() in ("", "false", "0", "no"):
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    raise Problem.of(
        "validation-error",
        f"query parameter {field} must be true or false, got {value!r}",
        [FieldError(field=field, message="true or false")],
    )


def _check_rows(rows: int, limit: int, field: str) -> None:
    check_batch_size(rows, limit, field, "embeddings", f"{field}: {rows} embeddings; the limit is {limit}")
