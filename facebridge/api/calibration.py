"""GET /calibration: which thresholds judge each comparison, the cohorts behind them, and the drift watch."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from facebridge.bridge import Bridge
from facebridge.errors import PROBLEM_RESPONSES
from facebridge.schemas.calibration import CalibrationReport
from facebridge.state import get_bridge

router = APIRouter(tags=["mappings"])


@router.get(
    "/calibration",
    response_model=CalibrationReport,
    summary="Calibrations and cohorts in force, and the estimated FAR of the shipped thresholds here",
    responses=PROBLEM_RESPONSES,
)
async def calibration(bridge: Bridge = Depends(get_bridge)) -> CalibrationReport:
    return bridge.calibration_report()
