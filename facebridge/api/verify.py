"""POST /verify: are two faces the same person, whichever models their templates come from?"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from facebridge.api.lean import LeanRoute
from facebridge.api.openapi import request_body
from facebridge.mapping.calibration import DEFAULT_OPERATING_POINT
from facebridge.metrics import observe_batch
from facebridge.schemas.verify import VerifyRequest, VerifyResponse, VerifyResult
from facebridge.service.errors import PROBLEM_RESPONSES, check_batch_size, validation_problem
from facebridge.service.security import needs
from facebridge.service.state import get_bridge, state_of

router = APIRouter(tags=["verify"], route_class=LeanRoute)

OPENAPI_BODY = request_body({"application/json": VerifyRequest})
_ANSWER = TypeAdapter(VerifyResponse)  # serialises straight to JSON bytes, no second validation


@router.post(
    "/verify",
    response_model=VerifyResponse,
    summary="Compare faces across (or within) models with a calibrated threshold",
    description="Each side is `{model, embedding}` or `{model, image}`. Pairs of different models are "
    "compared after translating one side (the direction with the better recorded quality, or into "
    f"`space`). Default decision rule: operating point `{DEFAULT_OPERATING_POINT}` (FAR 0.1%).",
    openapi_extra=OPENAPI_BODY,
    responses=PROBLEM_RESPONSES,
    dependencies=[needs("verify")],
)
async def verify(request: Request) -> Response:
    bridge = await get_bridge(request)
    # the body is parsed here rather than by a parameter so that errors come as problem+json with
    # the pairs[i].a.embedding-style field names the rest of the API uses
    try:
        body = VerifyRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_problem(exc.errors()) from exc
    pairs = body.all_pairs()
    observe_batch("/verify", len(pairs))
    limit = state_of(request).settings.max_pairs_per_request
    check_batch_size(len(pairs), limit, "pairs", "pairs")

    def run() -> list[VerifyResult]:
        return bridge.verify_pairs(
            pairs,
            operating_point=body.point(),
            threshold=body.threshold,
            space=body.space,
            normalization=body.normalization,
        )

    has_images = any(p.a.image is not None or p.b.image is not None for p in pairs)
    results = await run_in_threadpool(run) if has_images else run()
    return Response(_ANSWER.dump_json(VerifyResponse(results=results)), media_type="application/json")
