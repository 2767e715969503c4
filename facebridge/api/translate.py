"""POST /translate: embeddings of one model carried into another model's space.

JSON in, JSON out; or a .npy body (`application/x-npy`, float32 (n, d)) in and .npy out for bulk work,
with the source and target in the query string and the path in response headers.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from facebridge.api.vectors import check_matrix, parse_matrix
from facebridge.errors import PROBLEM_RESPONSES, FieldError, Problem
from facebridge.mapping.bank import MapPath, MappingBank
from facebridge.metrics import observe_batch
from facebridge.schemas.translate import MapUsed, TranslateRequest, TranslateResponse
from facebridge.state import get_bank, state_of

router = APIRouter(tags=["translate"])

NPY = "application/x-npy"


def resolve_path(bank: MappingBank, source: str, target: str, known_models: set[str]) -> MapPath:
    for field, model in (("source", source), ("target", target)):
        if model not in bank.spaces and model not in known_models:
            raise Problem(
                404,
                "unknown-model",
                "Unknown model",
                f"{field}: no model or space {model!r}",
                [FieldError(field=field, message="unknown model id")],
            )
    if source == target:
        raise Problem(
            422,
            "same-space",
            "Nothing to translate",
            "source and target are the same space",
            [FieldError(field="target", message="equals source")],
        )
    path = bank.find_path(source, target)
    if path is None:
        raise Problem(
            409,
            "no-map-path",
            "No map between these spaces",
            f"no map or chain of maps from {source} to {target}; see GET /mappings",
            [FieldError(field="target", message=f"unreachable from {source}")],
        )
    return path


def maps_used(path: MapPath) -> list[MapUsed]:
    return [
        MapUsed(
            id=m.id,
            method=m.meta.method,
            file=m.file,
            mean_cosine=m.meta.quality.mean_cosine,
            accuracy_cross=m.meta.quality.accuracy_cross,
            accuracy_target_native=m.meta.quality.accuracy_target_native,
        )
        for m in path.maps
    ]


def _known_models(request: Request) -> set[str]:
    registry = state_of(request).registry
    return set(registry.status) if registry is not None else set()


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
        {
            "name": "source",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "with an application/x-npy body",
        },
        {
            "name": "target",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "with an application/x-npy body",
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TranslateRequest.model_json_schema()},
            NPY: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": ".npy float32 array of shape (n, source dim)",
                }
            },
        },
    },
}


@router.post(
    "/translate",
    response_model=TranslateResponse,
    summary="Carry embeddings from one model's space into another's",
    description="JSON: `{source, target, embeddings}`. Bulk: POST a .npy float32 (n, d) body with "
    "`Content-Type: application/x-npy` and `?source=…&target=…`; the answer is .npy too, with the maps "
    "used in the `X-Facebridge-Maps` header.",
    openapi_extra=OPENAPI_BODY,
    responses={
        **PROBLEM_RESPONSES,
        200: {"content": {NPY: {}}},
        415: {"description": "Unsupported content type"},
    },
)
async def translate(request: Request, bank: MappingBank = Depends(get_bank)) -> Response:
    settings = state_of(request).settings
    content_type = request.headers.get("content-type", "")
    body = await read_body(request, settings.max_request_bytes)
    if content_type.startswith(NPY):
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
        path = resolve_path(bank, source, target, _known_models(request))
        matrix = check_matrix(
            read_npy(body), "body", path.maps[0].meta.source.dim, settings.max_embeddings_per_request
        )
        observe_batch("/translate", len(matrix))
        buffer, out = npy_buffer(len(matrix), path.maps[-1].meta.target.dim)
        if len(matrix) <= 4096:  # small products finish faster than a hop to a worker thread
            path.apply(matrix, out)
        else:
            await run_in_threadpool(path.apply, matrix, out)
        headers = {
            "X-Facebridge-Maps": ",".join(path.ids),
            "X-Facebridge-Composed": str(path.composed).lower(),
        }
        return Response(memoryview(buffer), media_type=NPY, headers=headers)
    if not content_type.startswith("application/json"):
        raise Problem(
            415, "unsupported-media-type", "Unsupported content type", f"send application/json or {NPY}"
        )
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(
            422, "validation-error", "Request is not valid", f"body is not valid JSON: {exc}"
        ) from exc
    if not isinstance(payload, dict):
        raise Problem(422, "validation-error", "Request is not valid", "body must be a JSON object")
    for field in ("source", "target"):
        if not isinstance(payload.get(field), str):
            raise Problem(
                422,
                "validation-error",
                "Request is not valid",
                f"{field}: a model id string is required",
                [FieldError(field=field, message="required string")],
            )
    extra = sorted(set(payload) - {"source", "target", "embeddings"})
    if extra:
        raise Problem(
            422,
            "validation-error",
            "Request is not valid",
            f"unknown field(s): {', '.join(extra)}",
            [FieldError(field=f, message="unknown field") for f in extra],
        )
    path = resolve_path(bank, payload["source"], payload["target"], _known_models(request))
    matrix = parse_matrix(
        payload.get("embeddings"),
        "embeddings",
        path.maps[0].meta.source.dim,
        settings.max_embeddings_per_request,
    )
    observe_batch("/translate", len(matrix))
    out = path.apply(matrix) if len(matrix) <= 64 else await run_in_threadpool(path.apply, matrix)
    answer = {
        "source": path.source,
        "target": path.target,
        "composed": path.composed,
        "maps": [m.model_dump() for m in maps_used(path)],
        "embeddings": out,
    }
    return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
