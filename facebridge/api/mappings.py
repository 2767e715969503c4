"""GET /mappings: every loaded map and space calibration, with quality and provenance; refused files.

GET /mappings/{source}/{target}/evaluation: the map's evaluation sidecar (score distributions and DET
curves per population, written by scripts/map_evaluations.py), as the operator console draws it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from facebridge.bridge import Bridge
from facebridge.evaluation.evaluation_files import evaluation_path, load_evaluation
from facebridge.schemas.catalog import MapInfo, MappingList, RefusedInfo
from facebridge.schemas.evaluation import MapEvaluation
from facebridge.service.errors import PROBLEM_RESPONSES, Problem
from facebridge.service.state import get_bridge, state_of

router = APIRouter(tags=["mappings"])


@router.get("/mappings", response_model=MappingList, summary="Loaded maps, spaces and calibrations")
def list_mappings(bridge: Bridge = Depends(get_bridge)) -> MappingList:
    bank = bridge.bank
    return MappingList(
        spaces=sorted(bank.spaces.values(), key=lambda s: s.model),
        space_calibrations=[bank.space_calibrations[k] for k in sorted(bank.space_calibrations)],
        maps=[MapInfo(id=m.id, file=m.file, metadata=m.meta) for _, m in sorted(bank.maps.items())],
        refused=[RefusedInfo(file=r.file, reason=r.reason) for r in bank.refused],
        in_force=bridge.comparisons_in_force(),
    )


@router.get(
    "/mappings/{source}/{target}/evaluation",
    response_model=MapEvaluation,
    summary="A map's measured score distributions and DET curves per population, native and cross",
    description="Read from the map's evaluation file (mappings/evaluations/SOURCE__TARGET.evaluation.json, "
    "written by scripts/map_evaluations.py). `current` is false when the loaded map's tensors are not the "
    "ones evaluated (refitted since). 404 `unknown-map` when no such map is loaded, 404 `no-evaluation` "
    "when the map has no evaluation file.",
    responses={k: v for k, v in PROBLEM_RESPONSES.items() if k in (401, 404, 503)},
)
async def map_evaluation(
    source: str, target: str, request: Request, bridge: Bridge = Depends(get_bridge)
) -> MapEvaluation:
    loaded = bridge.bank.maps.get((source, target))
    if loaded is None:  # also keeps path parameters out of the file name unless they name a loaded map
        raise Problem.of("unknown-map", f"no map {source}->{target} is loaded (GET /mappings)")
    path = evaluation_path(state_of(request).settings.mappings_dir, source, target)
    try:
        evaluation = await run_in_threadpool(load_evaluation, path)
    except FileNotFoundError:
        raise Problem.of(
            "no-evaluation",
            f"{loaded.id} has no evaluation file ({path.parent.name}/{path.name}); "
            "scripts/map_evaluations.py writes it from labelled embedding caches",
        ) from None
    except (OSError, ValueError) as error:  # pydantic's ValidationError is a ValueError
        raise Problem.of(
            "evaluation-unreadable",
            f"{path.parent.name}/{path.name}: {type(error).__name__}; "
            "rewrite it with scripts/map_evaluations.py",
        ) from error
    return evaluation.model_copy(update={"current": evaluation.tensor_sha256 == loaded.meta.tensor_sha256})
