"""GET /mappings: every loaded map and space calibration, with quality and provenance; refused files."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from facebridge.bridge import Bridge
from facebridge.schemas.catalog import MapInfo, MappingList, RefusedInfo
from facebridge.state import get_bridge

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
