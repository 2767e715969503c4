"""GET /models: every manifest entry, its state, its pinned hash and how it is fed."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from facebridge.exceptions import NotReady
from facebridge.schemas.catalog import ModelInfo, ModelList
from facebridge.service.state import ServiceState, get_state

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelList, summary="Known models and whether each is loaded")
def list_models(state: ServiceState = Depends(get_state)) -> ModelList:
    registry = state.registry
    if registry is None:
        raise NotReady(state.load_error or "models are still loading; retry shortly")
    bank = state.bank
    maps = list(bank.maps) if bank is not None else []
    calibrated = set(bank.space_calibrations) if bank is not None else set()
    infos = []
    for status in registry.status.values():
        entry = status.entry
        recognizer = entry.kind == "recognizer"
        infos.append(
            ModelInfo(
                id=entry.id,
                kind=entry.kind,
                state=status.state,
                reason=status.reason,
                file=entry.file,
                sha256=entry.sha256,
                file_sha256=status.sha256,
                dim=entry.dim,
                input_size=entry.size,
                layout=entry.layout if recognizer else None,
                color=entry.color if recognizer else None,
                alignment=entry.alignment,
                providers=status.providers,
                architecture=entry.architecture,
                license=entry.license,
                lfw_reference=entry.lfw_reference,
                maps_from=sorted(t for s, t in maps if s == entry.id),
                maps_to=sorted(s for s, t in maps if t == entry.id),
                space_calibrated=entry.id in calibrated,
            )
        )
    return ModelList(providers=registry.providers, models=infos)
