"""GET /calibration: which thresholds judge each comparison, the cohorts behind them, and the drift watch;
GET /calibration/history: the drift watch at each load and reload of the maps and cohorts."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from facebridge.bridge import Bridge
from facebridge.schemas.calibration import (
    CalibrationHistory,
    CalibrationReport,
    DriftPoint,
    DriftSnapshotInfo,
)
from facebridge.service.errors import PROBLEM_RESPONSES
from facebridge.service.state import ServiceState, get_bridge, get_state

router = APIRouter(tags=["mappings"])


@router.get(
    "/calibration",
    response_model=CalibrationReport,
    summary="Calibrations and cohorts in force, and the estimated FAR of the shipped thresholds here",
    responses=PROBLEM_RESPONSES,
)
async def calibration(bridge: Bridge = Depends(get_bridge)) -> CalibrationReport:
    return bridge.calibration_report()


@router.get(
    "/calibration/history",
    response_model=CalibrationHistory,
    summary="The drift watch over time: estimated FAR of the shipped thresholds at each (re)load",
    description="One snapshot per load of the maps and cohorts (start-up, POST /admin/reload-mappings, "
    "SIGHUP), oldest first, kept in memory and bounded; empty estimates where no cohort is configured.",
    responses={k: v for k, v in PROBLEM_RESPONSES.items() if k in (401,)},
)
async def calibration_history(state: ServiceState = Depends(get_state)) -> CalibrationHistory:
    history = state.drift_history
    return CalibrationHistory(
        kept=history.size,
        snapshots=[
            DriftSnapshotInfo(
                at=snapshot.at,
                event=snapshot.event,
                maps=snapshot.maps,
                cohorts=list(snapshot.cohorts),
                estimates=[
                    DriftPoint(
                        comparison=e.comparison,
                        operating_point=e.operating_point,
                        nominal_far=e.nominal_far,
                        threshold=e.threshold,
                        estimated_far=e.estimated_far,
                        interval=e.interval,
                        ratio=e.ratio,
                        off=e.off,
                        pairs=e.pairs,
                    )
                    for e in snapshot.estimates
                ],
            )
            for snapshot in history.snapshots()
        ],
    )
