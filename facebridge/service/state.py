"""What the running service holds: settings, the model registry, and whether loading has finished.

Models load in a background thread so that /healthz answers at once and /readyz tells an orchestrator
when the service can take traffic.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from fastapi import Request

from facebridge.bridge import Bridge
from facebridge.cohort.drift import DriftEstimate, drift_of, warn_about_drift
from facebridge.cohort.drift_history import DriftHistory
from facebridge.config import Settings
from facebridge.exceptions import NotReady
from facebridge.mapping.bank import MappingBank
from facebridge.metrics import publish_drift
from facebridge.pairs.store import PairStore
from facebridge.service.errors import Problem
from facebridge.vision.loading import open_registry
from facebridge.vision.pipeline import FacePipeline
from facebridge.vision.registry import ModelRegistry

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    registry: ModelRegistry | None = None
    bank: MappingBank | None = None
    pipeline: FacePipeline | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None
    pairs: PairStore | None = None  # the paired-template store, when FACEBRIDGE_PAIRS_DB/_DSN is set
    drift_history: DriftHistory = field(default_factory=DriftHistory)  # GET /calibration/history
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> None:
        try:
            # maps first: translating needs no ONNX file, and they load in milliseconds
            self.bank = MappingBank.from_settings(self.settings)
            self.drift_history.record("start", self.bank, watch_drift(self.bank))
            registry = open_registry(self.settings)
            self.registry = registry
            self.pipeline = FacePipeline(
                registry,
                self.settings.micro_batch_ms,
                self.settings.micro_batch_max,
                full_network_dir=self.settings.mappings_dir,
            )
            loaded = [k for k, s in registry.status.items() if s.state == "loaded"]
            log.info(
                "ready: %d model(s) loaded (%s), providers %s",
                len(loaded),
                ", ".join(loaded),
                registry.providers,
            )
        except Exception as exc:  # a broken manifest must not kill the process: /readyz reports it
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model loading failed")
        finally:
            self.ready.set()

    def reload_mappings(self, swap: bool = True) -> MappingBank:
        """Load the mappings folder into a new bank, then swap it in with one assignment.

        A request takes `self.bank` once (through its dependency), so it sees the old set or the new
        set, never a mix; a file that fails its checks is refused in the new bank like at start-up.
        `swap=False` only reports what would load.
        """
        with self._reload_lock:
            fresh = MappingBank.from_settings(self.settings)
            if not swap:
                return fresh
            self.bank = fresh
            self.drift_history.record("reload", fresh, watch_drift(fresh))
            log.info("mappings reloaded: %d map(s), %d refused", len(fresh.maps), len(fresh.refused))
            return fresh

    def start_loading(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="facebridge-model-loader", daemon=True)
        thread.start()
        return thread


def watch_drift(bank: MappingBank) -> list[DriftEstimate]:
    """Estimate the shipped thresholds' FAR on the cohorts' population: gauges and log warnings."""
    estimates = drift_of(bank)
    publish_drift([(d.comparison, d.operating_point, d.estimated_far, d.nominal_far) for d in estimates])
    warn_about_drift(estimates)
    return estimates


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread,
# which costs more than these lookups themselves on every request.


async def get_state(request: Request) -> ServiceState:
    return state_of(request)


def state_of(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _require_ready(state: ServiceState) -> None:
    if not state.ready.is_set():
        raise NotReady("models are still loading; retry once /readyz answers 200")


async def get_bank(request: Request) -> MappingBank:
    state = state_of(request)
    _require_ready(state)
    if state.bank is None:
        raise Problem.of("mappings-failed", state.load_error or "unknown error")
    return state.bank


async def get_pipeline(request: Request) -> FacePipeline:
    state = state_of(request)
    _require_ready(state)
    if state.pipeline is None:
        raise Problem.of("models-failed", state.load_error or "unknown error")
    return state.pipeline


async def get_bridge(request: Request) -> Bridge:
    """The library object a route calls: the current maps (swapped atomically on reload) and models."""
    bank = await get_bank(request)
    state = state_of(request)
    return Bridge(bank, state.pipeline, state.settings)
