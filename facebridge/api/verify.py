"""POST /verify: are two faces the same person, whichever models their templates come from?"""

from __future__ import annotations

import binascii
from collections import defaultdict

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from facebridge.api.translate import maps_used
from facebridge.api.vectors import check_matrix
from facebridge.errors import PROBLEM_RESPONSES, FieldError, Problem, validation_problem
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.calibration import DEFAULT_OPERATING_POINT, Calibration
from facebridge.mapping.compare import (
    ComparisonPlan,
    NoMapPath,
    NotCalibrated,
    plan_comparison,
    resolve_threshold,
)
from facebridge.metrics import observe_batch
from facebridge.schemas.verify import (
    CalibrationData,
    Pair,
    Side,
    ThresholdAnswer,
    VerifyRequest,
    VerifyResponse,
    VerifyResult,
)
from facebridge.state import ServiceState, get_bank, state_of
from facebridge.vision.images import ImageError, decode_image
from facebridge.vision.pipeline import DetectionOptions, NoFaceFound
from facebridge.vision.registry import ModelNotReady, UnknownModel

router = APIRouter(tags=["verify"])


def _side_vectors(
    state: ServiceState, bank: MappingBank, pairs: list[Pair]
) -> dict[tuple[int, str], np.ndarray]:
    """A unit vector for every side; photos are embedded, templates checked against their space."""
    vectors: dict[tuple[int, str], np.ndarray] = {}
    known = set(state.registry.status) if state.registry is not None else set()
    for index, pair in enumerate(pairs):
        for name, side in (("a", pair.a), ("b", pair.b)):
            field = f"pairs[{index}].{name}"
            if side.model not in bank.spaces and side.model not in known:
                raise Problem(
                    404,
                    "unknown-model",
                    "Unknown model",
                    f"{field}.model: no model {side.model!r}",
                    [FieldError(field=f"{field}.model", message="unknown model id")],
                )
            if side.embedding is not None:
                space = bank.spaces.get(side.model)
                dim = space.dim if space is not None else _manifest_dim(state, side.model)
                matrix = check_matrix(np.asarray([side.embedding], np.float32), f"{field}.embedding", dim, 1)
                vectors[(index, name)] = matrix[0] / np.linalg.norm(matrix[0])
            else:
                vectors[(index, name)] = _embed_photo(state, side, field)
    return vectors


def _manifest_dim(state: ServiceState, model: str) -> int | None:
    if state.registry is None or model not in state.registry.status:
        return None
    return state.registry.status[model].entry.dim


def _embed_photo(state: ServiceState, side: Side, field: str) -> np.ndarray:
    if state.pipeline is None:
        raise Problem(503, "not-ready", "Models are not loaded", "image sides need the recognizers")
    try:
        recognizer = state.pipeline.registry.recognizer(side.model)
    except (UnknownModel, ModelNotReady) as exc:
        raise Problem(
            409,
            "model-unavailable",
            "Model unavailable",
            f"{field}.model: {exc}",
            [FieldError(field=f"{field}.model", message="recognizer not loaded: send an embedding")],
        ) from exc
    settings = state.settings
    try:
        data = binascii.a2b_base64(side.image or "", strict_mode=True)
        image = decode_image(data, settings.max_image_bytes, settings.max_image_pixels)
        options = DetectionOptions(
            detector=settings.default_detector, score_threshold=settings.detection_threshold, max_faces=1
        )
        face = state.pipeline.embed_image(image, [recognizer.model_id], options)[0]
    except binascii.Error as exc:
        raise Problem(
            422,
            "invalid-base64",
            "Image is not valid base64",
            f"{field}.image: {exc}",
            [FieldError(field=f"{field}.image", message="invalid base64")],
        ) from exc
    except ImageError as exc:
        raise Problem(
            exc.status,
            exc.code,
            "Image rejected",
            f"{field}.image: {exc}",
            [FieldError(field=f"{field}.image", message=str(exc))],
        ) from exc
    except NoFaceFound as exc:
        raise Problem(
            422,
            "no-face",
            "No face found",
            f"{field}.image: {exc}",
            [FieldError(field=f"{field}.image", message="no face found")],
        ) from exc
    return face.embeddings[0].vector


def threshold_answer(threshold: float, point: str, calibration: Calibration | None) -> ThresholdAnswer:
    """What a result states about its threshold: the rates measured at `point` of `calibration`, how
    sure they are and the data behind them; a raw threshold (no calibration) claims none of it."""
    if calibration is None:
        return ThresholdAnswer(threshold=threshold, operating_point=point)
    measured = calibration.thresholds[point]
    return ThresholdAnswer(
        threshold=threshold,
        operating_point=point,
        far_at_threshold=measured.far,
        tar_at_threshold=measured.tar,
        far_interval=measured.far_interval,
        far_range=measured.far_range,
        far_range_note=measured.far_range_note,
        calibration_data=CalibrationData.model_validate(calibration, from_attributes=True),
    )


def _score_group(plan: ComparisonPlan, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if plan.path is not None:
        if plan.translate_side == "a":
            a = plan.path.apply(a)
        else:
            b = plan.path.apply(b)
    return np.einsum("ij,ij->i", a, b)


@router.post(
    "/verify",
    response_model=VerifyResponse,
    summary="Compare faces across (or within) models with a calibrated threshold",
    description="Each side is `{model, embedding}` or `{model, image}`. Pairs of different models are "
    "compared after translating one side (the direction with the better recorded quality, or into "
    f"`space`). Default decision rule: operating point `{DEFAULT_OPERATING_POINT}` (FAR 0.1%).",
    responses=PROBLEM_RESPONSES,
)
async def verify(request: Request, bank: MappingBank = Depends(get_bank)) -> VerifyResponse:
    state = state_of(request)
    try:
        body = VerifyRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_problem(exc.errors()) from exc
    pairs = body.all_pairs()
    observe_batch("/verify", len(pairs))
    if len(pairs) > state.settings.max_pairs_per_request:
        raise Problem(
            413,
            "batch-too-large",
            "Too many pairs",
            f"{len(pairs)} pairs; the limit is {state.settings.max_pairs_per_request}",
            [FieldError(field="pairs", message="too many pairs")],
        )
    point = body.point()
    if body.space is not None and body.space not in bank.spaces:
        raise Problem(
            404,
            "unknown-model",
            "Unknown space",
            f"space: no space {body.space!r}",
            [FieldError(field="space", message="unknown space")],
        )
    has_images = any(p.a.image is not None or p.b.image is not None for p in pairs)
    if has_images:
        vectors = await run_in_threadpool(_side_vectors, state, bank, pairs)
    else:
        vectors = _side_vectors(state, bank, pairs)

    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, pair in enumerate(pairs):
        groups[(pair.a.model, pair.b.model)].append(index)
    results: list[VerifyResult | None] = [None] * len(pairs)
    for (model_a, model_b), indices in groups.items():
        field = f"pairs[{indices[0]}]"
        try:
            plan = plan_comparison(bank, model_a, model_b, body.space)
            answer = threshold_answer(*resolve_threshold(plan, point, body.threshold))
        except NoMapPath as exc:
            raise Problem(
                409,
                "no-map-path",
                "No map between these spaces",
                f"{field}: {exc}",
                [FieldError(field=field, message=str(exc))],
            ) from exc
        except NotCalibrated as exc:
            raise Problem(
                409,
                "not-calibrated",
                "No calibrated threshold",
                f"{field}: {exc}",
                [FieldError(field=field, message=str(exc))],
            ) from exc
        a = np.stack([vectors[(i, "a")] for i in indices])
        b = np.stack([vectors[(i, "b")] for i in indices])
        scores = _score_group(plan, a, b)
        maps = [m.id for m in maps_used(plan.path)] if plan.path is not None else []
        for i, score in zip(indices, scores, strict=True):
            results[i] = VerifyResult(
                index=i,
                score=float(score),
                match=bool(score >= answer.threshold),
                calibrated=plan.calibrated or body.threshold is not None,
                comparison=plan.kind,
                space=plan.space,
                translated=plan.translate_side,
                maps=maps,
                **dict(answer),
            )
    return VerifyResponse(results=[r for r in results if r is not None])
