"""POST /translate: embeddings of one model carried into another model's space.

JSON in, JSON out; or a .npy body (`application/x-npy`, float32 (n, d)) in and .npy out for bulk work,
with the source and target in the query string and the path in response headers. With `?confidence=true`
the bulk answer is an uncompressed .npz (`application/x-npz`) holding `embeddings` and `confidence`
(each row's expected cosine with the target model's own embedding), as `np.load` reads it.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError

from facebridge.api.openapi import request_body
from facebridge.bridge import Bridge, Translation
from facebridge.errors import PROBLEM_RESPONSES, FieldError, Problem, check_batch_size, validation_problem
from facebridge.metrics import observe_batch
from facebridge.schemas.translate import TranslateRequest, TranslateResponse
from facebridge.security import needs
from facebridge.state import get_bridge, state_of
from facebridge.vectors import check_matrix, parse_matrix

router = APIRouter(tags=["translate"])

NPY = "application/x-npy"
NPZ = "application/x-npz"


def read_npy(body: bytes | bytearray) -> np.ndarray:
    """Zero-copy view of a C-ordered .npy body (float32 preferred; float64 is converted)."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise Problem(422, "invalid-npy", "Body is not a .npy array", str(exc)) from exc
    if fortran or dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise Problem(
            422,
            "invalid-npy",
            "Unsupported .npy array",
            f"need a C-ordered float32 (or float64) array, got dtype {dtype}, fortran_order={fortran}",
        )
    count = int(np.prod(shape))
    offset = stream.tell()
    if len(body) - offset != count * dtype.itemsize:
        raise Problem(
            422,
            "invalid-npy",
            "Truncated .npy array",
            f"header promises {count * dtype.itemsize} bytes of data, body has {len(body) - offset}",
        )
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
    return array if dtype == np.dtype("<f4") else array.astype(np.float32)


def npy_buffer(rows: int, dim: int) -> tuple[bytearray, np.ndarray]:
    """A complete .npy file for a float32 (rows, dim) array, and a writable view of its data part.

    Results are computed straight into the view, so the response body is never copied.
    """
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
    )
    offset = len(header.getvalue())
    buffer = bytearray(offset + rows * dim * 4)
    buffer[:offset] = header.getvalue()
    return buffer, np.frombuffer(buffer, dtype="<f4", offset=offset).reshape(rows, dim)


async def read_body(request: Request, limit: int) -> bytes | bytearray:
    """The request body, read into one preallocated buffer when its length is declared."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        body = await request.body()
        if len(body) > limit:
            raise _too_large(len(body), limit)
        return body
    size = int(declared)
    if size > limit:
        raise _too_large(size, limit)
    buffer = bytearray(size)
    view = memoryview(buffer)
    position = 0
    async for chunk in request.stream():
        end = position + len(chunk)
        if end > size:
            raise Problem(
                400, "bad-content-length", "Body longer than declared", f"more than {size} bytes sent"
            )
        view[position:end] = chunk
        position = end
    if position != size:
        raise Problem(400, "bad-content-length", "Body shorter than declared", f"{position} of {size} bytes")
    return buffer


def _too_large(size: int, limit: int) -> Problem:
    return Problem(413, "request-too-large", "Request body too large", f"{size} bytes; the limit is {limit}")


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
async def translate(request: Request, bridge: Bridge = Depends(get_bridge)) -> Response:
    settings = state_of(request).settings
    content_type = request.headers.get("content-type", "")
    body = await read_body(request, settings.max_request_bytes)
    if content_type.startswith(NPY):
        return await _translate_npy(request, bridge, body)
    if not content_type.startswith("application/json"):
        raise Problem(
            415, "unsupported-media-type", "Unsupported content type", f"send application/json or {NPY}"
        )
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


async def _translate_npy(request: Request, bridge: Bridge, body: bytes | bytearray) -> Response:
    """The bulk path: .npy in, .npy out, the result written straight into the response buffer."""
    settings = state_of(request).settings
    source, target = request.query_params.get("source"), request.query_params.get("target")
    if not source or not target:
        missing = "source" if not source else "target"
        raise Problem(
            422,
            "validation-error",
            "Request is not valid",
            f"query parameter {missing} is required",
            [FieldError(field=missing, message="required with an application/x-npy body")],
        )
    path = bridge.map_path(source, target)
    with_confidence = _flag(request.query_params.get("confidence"), "confidence")
    if with_confidence and not path.has_confidence:
        lacking = [m.id for m in path.maps if not m.has_confidence]
        raise Problem(
            409,
            "no-confidence",
            "No confidence predictor",
            f"map(s) {', '.join(lacking)} carry no confidence predictor; ask without confidence=true",
            [FieldError(field="confidence", message="the map path has no confidence predictor")],
        )
    matrix = check_matrix(
        read_npy(body), "body", path.maps[0].meta.source.dim, settings.max_embeddings_per_request
    )
    observe_batch("/translate", len(matrix))
    buffer, out = npy_buffer(len(matrix), path.maps[-1].meta.target.dim)
    if len(matrix) <= 4096:  # small products finish faster than a hop to a worker thread
        result = bridge.translate_along(path, matrix, out, with_confidence)
    else:
        result = await run_in_threadpool(bridge.translate_along, path, matrix, out, with_confidence)
    headers = {
        "X-Facebridge-Maps": ",".join(path.ids),
        "X-Facebridge-Composed": str(path.composed).lower(),
    }
    if with_confidence and result.confidence is not None:
        return Response(npz_body(buffer, result.confidence), media_type=NPZ, headers=headers)
    return Response(memoryview(buffer), media_type=NPY, headers=headers)


def npz_body(embeddings_npy: bytearray, confidence: np.ndarray) -> memoryview:
    """An uncompressed .npz of the ready .npy embeddings and the confidence vector (one copy of each)."""
    vector = io.BytesIO()
    np.save(vector, np.ascontiguousarray(confidence, dtype="<f4"), allow_pickle=False)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as npz:
        npz.writestr("embeddings.npy", memoryview(embeddings_npy))
        npz.writestr("confidence.npy", vector.getbuffer())
    return archive.getbuffer()


def _flag(value: str | None, field: str) -> bool:
    if value is None or value.lower() in ("", "false", "0", "no"):
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    raise Problem(
        422,
        "validation-error",
        "Request is not valid",
        f"query parameter {field} must be true or false, got {value!r}",
        [FieldError(field=field, message="true or false")],
    )


def _check_rows(rows: int, limit: int, field: str) -> None:
    check_batch_size(rows, limit, field, "embeddings", f"{field}: {rows} embeddings; the limit is {limit}")
