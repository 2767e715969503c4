"""POST /embed: photos in (multipart, base64 JSON, or a .npy of pixels; one or a batch), faces and
embeddings out.

The .npy body (`application/x-npy`, uint8 (n, height, width, 3)) is for callers that already hold
pixels, aligned crops above all: nothing is decoded, and the options travel in the query string."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from facebridge.api.body import read_body
from facebridge.api.lean import LeanRoute
from facebridge.api.openapi import request_body
from facebridge.bridge import decode_base64
from facebridge.config import Settings
from facebridge.exceptions import ImageTooLarge
from facebridge.metrics import observe_batch
from facebridge.npy import NPY, read_pixels
from facebridge.schemas.embed import EmbedJsonRequest, EmbedOptions, EmbedResponse
from facebridge.service.errors import (
    PROBLEM_RESPONSES,
    FieldError,
    Problem,
    check_batch_size,
    validation_problem,
)
from facebridge.service.recording import RECORDED_HEADER, audit_recording, embed_and_record, recording_store
from facebridge.service.security import needs, principal_of, require_also
from facebridge.service.state import get_bridge, get_pipeline, state_of

router = APIRouter(tags=["embed"], route_class=LeanRoute)

OPTION_FIELDS: dict[str, dict[str, Any]] = {
    "models": {"type": "string", "description": "comma-separated recognizer ids"},
    "detector": {"type": "string"},
    "aligned": {"type": "boolean"},
    "largest_only": {"type": "boolean"},
    "max_faces": {"type": "integer", "minimum": 1},
    "detection_threshold": {"type": "number", "minimum": 0, "maximum": 1},
    "normalize": {"type": "boolean"},
    "mode": {"type": "string", "enum": ["embedding", "full-network"]},
    "crops": {"type": "boolean", "description": "also return the aligned crops (base64 PNG)"},
    "record_subject": {"type": "string", "description": "record the pairs (see `record`)"},
}
CHANNELS = ("bgr", "rgb")

OPENAPI_BODY: dict[str, Any] = {
    "parameters": [
        {
            "name": "channels",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": list(CHANNELS)},
            "description": "with an application/x-npy body, required: the pixels' colour order (OpenCV "
            "gives bgr, Pillow rgb; a swapped order embeds without error, and worse)",
        },
        *(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": schema,
                "description": "with an application/x-npy body (as the multipart field)",
            }
            for name, schema in OPTION_FIELDS.items()
        ),
    ],
    **request_body(
        {
            "application/json": EmbedJsonRequest,
            "multipart/form-data": {
                "type": "object",
                "required": ["images"],
                "properties": {
                    "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    **OPTION_FIELDS,
                },
            },
            NPY: {
                "type": "string",
                "format": "binary",
                "description": ".npy uint8 array (n, height, width, 3) or (height, width, 3): one image "
                "per row, options in the query string",
            },
        }
    ),
}


async def _parse_multipart(request: Request, settings: Settings) -> tuple[EmbedOptions, list[bytes]]:
    form = await request.form(max_files=settings.max_images_per_request + 1)
    uploads = [v for key in ("images", "image") for v in form.getlist(key) if isinstance(v, UploadFile)]
    if not uploads:
        raise Problem.of(
            "validation-error",
            "no file in form field 'images'",
            [FieldError(field="images", message="at least one file is required")],
        )
    fields = ((k, v) for k, v in form.multi_items() if k not in ("images", "image") and isinstance(v, str))
    options = _options_from_fields(fields)
    blobs = []
    for index, upload in enumerate(uploads):
        data = await upload.read(settings.max_image_bytes + 1)
        if len(data) > settings.max_image_bytes:
            message = f"images[{index}] exceeds {settings.max_image_bytes} bytes"
            raise ImageTooLarge(message, field=f"images[{index}]")
        blobs.append(data)
    return options, blobs


def _options_from_fields(fields: Iterable[tuple[str, str]]) -> EmbedOptions:
    """EmbedOptions from flat text fields (a form's or a query string's): `models` comma-separated
    and repeatable, `record_subject` for `record`."""
    raw: dict[str, Any] = {}
    for key, value in fields:
        if key == "models":
            raw.setdefault("models", []).extend(v.strip() for v in value.split(",") if v.strip())
        elif key == "record_subject":
            raw["record"] = {"subject": value}
        else:
            raw[key] = value
    try:
        return EmbedOptions.model_validate(raw)
    except ValidationError as exc:
        raise validation_problem(exc.errors()) from exc


async def _parse_npy(request: Request, settings: Settings) -> tuple[EmbedOptions, list[np.ndarray]]:
    """Options from the query string, images as views of the body's pixels (BGR, as decoded photos)."""
    query = request.query_params
    channels = query.get("channels")
    if channels not in CHANNELS:
        raise Problem.of(
            "validation-error",
            f"query parameter channels must be bgr or rgb with an {NPY} body, got {channels!r}",
            [FieldError(field="channels", message="bgr or rgb: the colour order of the pixels")],
        )
    options = _options_from_fields((k, v) for k, v in query.multi_items() if k != "channels")
    body = await read_body(request, settings.max_request_bytes, binary=True)
    pixels = read_pixels(body, settings.max_images_per_request, settings.max_image_pixels)
    if channels == "rgb":
        pixels = np.ascontiguousarray(pixels[..., ::-1])
    return options, list(pixels)


async def _parse_json(request: Request, settings: Settings) -> tuple[EmbedOptions, list[bytes]]:
    try:
        body = EmbedJsonRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_problem(exc.errors()) from exc
    images = body.all_images()
    blobs = [
        decode_base64(img.data, settings.max_image_bytes, f"images[{i}].data") for i, img in enumerate(images)
    ]
    return EmbedOptions.model_validate(body.model_dump(include=set(EmbedOptions.model_fields))), blobs


@router.post(
    "/embed",
    response_model=EmbedResponse,
    summary="Detect, align and embed faces",
    description="Send one image or a batch as multipart files (`images`), base64 JSON, or a .npy of "
    "uint8 pixels (n, height, width, 3) with `Content-Type: application/x-npy`, `?channels=bgr|rgb` and "
    "the options in the query string (e.g. `&aligned=true&models=…` for aligned crops). Each face is "
    "returned with its box, landmarks, detection score and one embedding per requested model, each "
    "naming the sha256 of the weights that produced it. With `record` (or `record_subject`) the key "
    "needs scope `pairs:record` as well.",
    openapi_extra=OPENAPI_BODY,
    responses={**PROBLEM_RESPONSES, 415: {"description": "Unsupported content type"}},
    dependencies=[needs("embed")],
)
async def embed(request: Request) -> Response:
    bridge = await get_bridge(request)
    await get_pipeline(request)  # 503 while the recognizers load, before the body is read
    settings = state_of(request).settings
    content_type = request.headers.get("content-type", "")
    blobs: list[bytes] | list[np.ndarray]
    if content_type.startswith("multipart/form-data"):
        options, blobs = await _parse_multipart(request, settings)
    elif content_type.startswith("application/json"):
        options, blobs = await _parse_json(request, settings)
    elif content_type.startswith(NPY):
        options, blobs = await _parse_npy(request, settings)
    else:
        raise Problem.of(
            "unsupported-media-type", f"send multipart/form-data (field 'images'), application/json or {NPY}"
        )
    observe_batch("/embed", len(blobs))
    limit = settings.max_images_per_request
    check_batch_size(
        len(blobs), limit, "images", "images", f"{len(blobs)} images; the limit is {limit} per request"
    )
    principal = principal_of(request)
    if options.record is not None:
        require_also(request, principal, "pairs:record", "recording pairs (`record`)")
    store = recording_store(request, options)  # before any photo is decoded: 404 when recording is off
    if store is not None:
        assert options.record is not None
        subject = options.record.subject
        try:
            answer, recorded = await run_in_threadpool(embed_and_record, bridge, store, blobs, options)
        except Problem as problem:
            if problem.code == "pairs-unavailable":
                audit_recording(request, principal, "failed", 0, subject)
            raise
        audit_recording(request, principal, "ok", recorded, subject)
        return _answer(answer, {RECORDED_HEADER: str(recorded)})
    return _answer(await run_in_threadpool(bridge.embed_images, blobs, options))


_ANSWER = TypeAdapter(EmbedResponse)


def _answer(answer: EmbedResponse, headers: dict[str, str] | None = None) -> Response:
    """The answer serialised once, straight to JSON bytes: `response_model` would validate the
    embeddings again and encode them through Python's json module."""
    return Response(_ANSWER.dump_json(answer), media_type="application/json", headers=headers)
