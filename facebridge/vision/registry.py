"""Which models are installed, verified and loaded.

Start-up never fails because of one model: a missing file makes it "unavailable", a file whose hash
differs from the manifest or that onnxruntime cannot open makes it "refused", each with the reason,
and everything else keeps serving.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from facebridge.exceptions import ModelNotReady, UnknownModel
from facebridge.vision.detection import FaceDetector, ScrfdDetector, YuNetDetector
from facebridge.vision.manifest import Manifest, ModelEntry, sha256_file
from facebridge.vision.recognizer import Recognizer
from facebridge.vision.runtime import Spinning, create_session

log = logging.getLogger(__name__)

ModelState = Literal["loaded", "available", "unavailable", "refused"]


@dataclass
class ModelStatus:
    entry: ModelEntry
    state: ModelState
    reason: str = ""
    sha256: str | None = None
    providers: list[str] = field(default_factory=list)


def verify_file(entry: ModelEntry, models_dir: Path) -> ModelStatus:
    """Check presence and hash of one model file without loading it."""
    path = models_dir / entry.file
    if not path.is_file():
        return ModelStatus(entry, "unavailable", f"file {entry.file} not found in {models_dir}")
    digest = sha256_file(path)
    if entry.sha256 is None:
        log.warning("%s: no sha256 pinned in the manifest; the file hashes to %s", entry.id, digest)
    elif digest != entry.sha256:
        return ModelStatus(
            entry, "refused", f"sha256 of {entry.file} is {digest}, the manifest pins {entry.sha256}", digest
        )
    return ModelStatus(entry, "available", "", digest)


class ModelRegistry:
    """Loaded recognizers and detectors, keyed by manifest id, plus the status of every entry."""

    def __init__(
        self,
        manifest: Manifest,
        models_dir: Path,
        providers: list[str],
        intra_op_threads: int = 0,
        spinning: Spinning = "off",
    ):
        self.manifest = manifest
        self.models_dir = models_dir
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self.spinning: Spinning = spinning
        self.status: dict[str, ModelStatus] = {m.id: verify_file(m, models_dir) for m in manifest.models}
        self.recognizers: dict[str, Recognizer] = {}
        self.detectors: dict[str, FaceDetector] = {}
        self._lock = threading.Lock()

    def load(self, model_ids: list[str] | None = None) -> None:
        """Load the selected (default: all available) models; failures are recorded, never raised."""
        for model_id, status in self.status.items():
            if status.state != "available" or (model_ids is not None and model_id not in model_ids):
                continue
            try:
                self._load_one(status)
            except Exception as exc:
                status.state, status.reason = "refused", f"could not be loaded: {exc}"
                log.error("model %s refused: %s", model_id, status.reason)
        for model_id, status in self.status.items():
            if status.state in ("unavailable", "refused"):
                log.warning("model %s %s: %s", model_id, status.state, status.reason)

    def _load_one(self, status: ModelStatus) -> None:
        entry, path = status.entry, self.models_dir / status.entry.file
        assert status.sha256 is not None
        if entry.kind == "recognizer":
            session = create_session(path, self.providers, self.intra_op_threads, self.spinning)
            recognizer = Recognizer(entry, session, status.sha256)
            status.providers = recognizer.providers
            with self._lock:
                self.recognizers[entry.id] = recognizer
        else:
            detector: FaceDetector
            if entry.engine == "yunet":
                detector = YuNetDetector(entry, path)
                status.providers = ["OpenCV DNN (CPU)"]
            else:
                detector = ScrfdDetector(entry, path, self.providers)
                status.providers = list(self.providers)
            with self._lock:
                self.detectors[entry.id] = detector
        status.state = "loaded"
        log.info("model %s loaded (sha256 %s…)", entry.id, status.sha256[:12])

    def _status_of(self, model_id: str) -> ModelStatus:
        if model_id not in self.status:
            raise UnknownModel(model_id)
        return self.status[model_id]

    def recognizer(self, model_id: str) -> Recognizer:
        status = self._status_of(model_id)
        if model_id not in self.recognizers:
            if status.entry.kind != "recognizer":
                raise ModelNotReady(f"{model_id} is a {status.entry.kind}, not a recognizer")
            raise ModelNotReady(f"{model_id} is {status.state}: {status.reason or 'not loaded'}")
        return self.recognizers[model_id]

    def detector(self, model_id: str) -> FaceDetector:
        status = self._status_of(model_id)
        if model_id not in self.detectors:
            if status.entry.kind != "detector":
                raise ModelNotReady(f"{model_id} is a {status.entry.kind}, not a detector")
            raise ModelNotReady(f"{model_id} is {status.state}: {status.reason or 'not loaded'}")
        return self.detectors[model_id]

    def model_path(self, model_id: str) -> Path:
        """The verified file of a loaded model (for tools that build their own session from it)."""
        self._status_of(model_id)
        if self.status[model_id].state != "loaded":
            raise ModelNotReady(f"{model_id} is {self.status[model_id].state}")
        return self.models_dir / self.status[model_id].entry.file
