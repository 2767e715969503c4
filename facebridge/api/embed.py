"""POST /embed: photos in (multipart or base64 JSON, one or a batch), faces and embeddings out."""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from facebridge.config import Settings
from facebridge.errors import PROBLEM_RESPONSES, FieldError, Problem, validation_problem
from facebridge.metrics import observe_batch
from facebridge.schemas.embed import (
    DetectorInfo,
    Embedding,
    EmbedJsonRequest,
    EmbedOptions,
    EmbedResponse,
    Face,
    ImageResult,
)
from facebridge.state import get_pipeline, state_of
from facebridge.vision.images import ImageError, decode_image
from facebridge.vision.pipeline import (
    FULL_NETWORK,
    DetectionOptions,
    FacePipeline,
    FaceResult,
    FullNetworkUnavailable,
    NoFaceFound,
)
from facebridge.vision.registry import ModelNotReady, UnknownModel

router = APIRouter(tags=["embed"])

OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": EmbedJsonRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "models": {"type": "string", "description": "comma-separated recognizer ids"},
                        "detector": {"type": "string"},
                        "aligned": {"type": "boolean"},
                        "largest_only": {"type": "boolean"},
                        "max_faces": {"type": "integer", "minimum": 1},
                        "detection_threshold": {"type": "number", "minimum": 0, "maximum": 1},
                        "normalize": {"type": "boolean"},
                        "mode": {"type": "string", "enum": ["embedding", "full-network"]},
                    },
                }
            },
        },
    }
}


def _b64decode(text: str, index: int, max_bytes: int) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (max_bytes * 4) // 3 + 4:
        raise Problem(
            413,
            "image-too-large",
            "Image too large",
            f"images[{index}] exceeds {max_bytes} bytes",
            [FieldError(field=f"images[{index}].data", message="too large")],
        )
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise Problem(
            422,
            "invalid-base64",
            "Image is not valid base64",
            f"images[{index}].data: {exc}",
            [FieldError(field=f"images[{index}].data", message=f"invalid base64: {exc}")],
        ) from exc


async def _parse_multipart(request: Request, settings: Settings) -> tuple[EmbedOptions, list[bytes]]:
    form = await request.form(max_files=settings.max_images_per_request + 1)
    uploads = [v for key in ("images", "image") for v in form.getlist(key) if isinstance(v, UploadFile)]
    if not uploads:
        raise Problem(
            422,
            "validation-error",
            "Request is not valid",
            "no file in form field 'images'",
            [FieldError(field="images", message="at least one file is required")],
        )
    raw: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key in ("images", "image") or isinstance(value, UploadFile):
            continue
        if key == "models":
            raw.setdefault("models", []).extend(v.strip() for v in value.split(",") if v.strip())
        else:
            raw[key] = value
    try:
        options = EmbedOptions.model_validate(raw)
    except ValidationError as exc:
        raise validation_problem(exc.errors()) from exc
    blobs = []
    for index, upload in enumerate(uploads):
        data = await upload.read(settings.max_image_bytes + 1)
        if len(data) > settings.max_image_bytes:
            raise Problem(
                413,
                "image-too-large",
                "Image too large",
                f"images[{index}] exceeds {settings.max_image_bytes} bytes",
                [FieldError(field=f"images[{index}]", message="too large")],
            )
        blobs.append(data)
    return options, blobs


async def _parse_json(request: Request, settings: Settings) -> tuple[EmbedOptions, list[bytes]]:
    try:
        body = EmbedJsonRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_problem(exc.errors()) from exc
    images = body.all_images()
    blobs = [_b64decode(img.data, i, settings.max_image_bytes) for i, img in enumerate(images)]
    return EmbedOptions.model_validate(body.model_dump(include=set(EmbedOptions.model_fields))), blobs


def _check_models(pipeline: FacePipeline, options: EmbedOptions, model_ids: list[str], detector: str) -> None:
    """Every named model must exist and be loaded before any image is touched."""
    checks: list[tuple[str, str, Callable[[str], object]]] = [
        (f"models[{i}]", m, pipeline.registry.recognizer) for i, m in enumerate(model_ids)
    ]
    if not options.aligned:
        checks.append(("detector", detector, pipeline.registry.detector))
    if options.mode == FULL_NETWORK:
        checks += [(f"models[{i}]", m, pipeline.full_network) for i, m in enumerate(model_ids)]
    for field, model_id, get in checks:
        try:
            get(model_id)
        except UnknownModel as exc:
            raise Problem(
                404,
                "unknown-model",
                "Unknown model",
                f"{field}: no model with id {model_id!r}",
                [FieldError(field=field, message="unknown model id")],
            ) from exc
        except FullNetworkUnavailable as exc:
            raise Problem(
                409,
                "full-network-unavailable",
                "Full-network mode unavailable",
                f"{field}: {exc}",
                [FieldError(field=field, message=str(exc))],
            ) from exc
        except ModelNotReady as exc:
            raise Problem(
                409,
                "model-unavailable",
                "Model unavailable",
                f"{field}: {exc}",
                [FieldError(field=field, message=str(exc))],
            ) from exc


def _face(result: FaceResult) -> Face:
    det = result.detection
    return Face(
        box=None if det is None else [round(float(v), 2) for v in det.box],
        landmarks=None
        if det is None
        else [[round(float(x), 2), round(float(y), 2)] for x, y in det.landmarks],
        detection_score=None if det is None else round(det.score, 5),
        embeddings=[
            Embedding(
                model=e.model_id,
                sha256=e.sha256,
                dim=len(e.vector),
                normalized=e.normalized,
                mode=e.mode,
                embedding=e.vector.astype(float).tolist(),
            )
            for e in result.embeddings
        ],
    )


def _embed_all(
    pipeline: FacePipeline,
    images: list[np.ndarray],
    options: EmbedOptions,
    model_ids: list[str],
    detection: DetectionOptions,
) -> list[ImageResult]:
    results = []
    for index, image in enumerate(images):
        if options.aligned:
            faces = [pipeline.embed_aligned(image, model_ids, options.normalize, options.mode)]
        else:
            try:
                faces = pipeline.embed_image(image, model_ids, detection, options.normalize, options.mode)
            except NoFaceFound as exc:
                raise Problem(
                    422,
                    "no-face",
                    "No face found",
                    f"images[{index}]: {exc}",
                    [FieldError(field=f"images[{index}]", message="no face found")],
                ) from exc
        results.append(
            ImageResult(
                index=index, width=image.shape[1], height=image.shape[0], faces=[_face(f) for f in faces]
            )
        )
    return results


@router.post(
    "/embed",
    response_model=EmbedResponse,
    summary="Detect, align and embed faces",
    description="Send one image or a batch as multipart files (`images`) or base64 JSON. Each face is "
    "returned with its box, landmarks, detection score and one embedding per requested model, each "
    "naming the sha256 of the weights that produced it.",
    openapi_extra=OPENAPI_BODY,
    responses={**PROBLEM_RESPONSES, 415: {"description": "Unsupported content type"}},
)
async def embed(request: Request, pipeline: FacePipeline = Depends(get_pipeline)) -> EmbedResponse:
    settings = state_of(request).settings
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        options, blobs = await _parse_multipart(request, settings)
    elif content_type.startswith("application/json"):
        options, blobs = await _parse_json(request, settings)
    else:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported content type",
            "send multipart/form-data (field 'images') or application/json",
        )
    observe_batch("/embed", len(blobs))
    if len(blobs) > settings.max_images_per_request:
        raise Problem(
            413,
            "batch-too-large",
            "Too many images",
            f"{len(blobs)} images; the limit is {settings.max_images_per_request} per request",
            [FieldError(field="images", message="too many images")],
        )
    model_ids = options.models or [settings.default_recognizer]
    detector = options.detector or settings.default_detector
    _check_models(pipeline, options, model_ids, detector)
    images = []
    for index, blob in enumerate(blobs):
        try:
            images.append(decode_image(blob, settings.max_image_bytes, settings.max_image_pixels))
        except ImageError as exc:
            raise Problem(
                exc.status,
                exc.code,
                "Image rejected",
                f"images[{index}]: {exc}",
                [FieldError(field=f"images[{index}]", message=str(exc))],
            ) from exc
    limit = min(options.max_faces or settings.max_faces_per_image, settings.max_faces_per_image)
    detection = DetectionOptions(
        detector=detector,
        score_threshold=options.detection_threshold
        if options.detection_threshold is not None
        else settings.detection_threshold,
        max_faces=1 if options.largest_only else limit,
        policy="largest",
    )
    results = await run_in_threadpool(_embed_all, pipeline, images, options, model_ids, detection)
    detector_info = None
    if not options.aligned:
        detector_info = DetectorInfo(id=detector, sha256=pipeline.registry.status[detector].sha256)
    return EmbedResponse(detector=detector_info, results=results)
