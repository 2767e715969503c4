"""The drift watch over time: the estimates of each load and reload of the maps and cohorts, kept in
memory (bounded) so GET /calibration/history and the console can show how the estimated FAR of the
shipped thresholds on the deployment's population moved. Lost on restart, by design: the estimates are
cheap to recompute and the gauges (facebridge_estimated_far) are what a monitoring system keeps."""

from __future__ import annotations

import datetime as dt
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from facebridge.cohort.drift import DriftEstimate

if TYPE_CHECKING:
    from facebridge.mapping.bank import MappingBank

DRIFT_HISTORY = 200  # snapshots kept: at one reload a day, more than half a year
Event = Literal["start", "reload"]


@dataclass(frozen=True)
class DriftSnapshot:
    at: dt.datetime
    event: Event
    maps: int
    cohorts: tuple[str, ...]
    estimates: tuple[DriftEstimate, ...]


class DriftHistory:
    """A bounded, thread-safe list of snapshots, oldest first."""

    def __init__(self, size: int = DRIFT_HISTORY) -> None:
        self.size = size
        self._items: deque[DriftSnapshot] = deque(maxlen=size)
        self._lock = threading.Lock()

    def record(self, event: Event, bank: MappingBank, estimates: list[DriftEstimate]) -> DriftSnapshot:
        snapshot = DriftSnapshot(
            dt.datetime.now(dt.UTC),
            event,
            len(bank.maps),
            tuple(sorted(c.id for c in bank.scoring.cohorts.values())),
            tuple(estimates),
        )
        with self._lock:
            self._items.append(snapshot)
        return snapshot

    def snapshots(self) -> list[DriftSnapshot]:
        with self._lock:
            return list(self._items)
