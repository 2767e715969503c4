"""Service settings, read from FACEBRIDGE_* environment variables (or a .env file)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from facebridge.paths import (
    default_audit_log,
    default_cache_dir,
    default_mappings_dir,
    default_models_dir,
    shipped_manifest,
)
from facebridge.vision.manifest import Manifest, load_manifest, overlay_manifest

# what onnxruntime's worker threads do while they wait for work (facebridge/vision/runtime.py)
Spinning = Literal["off", "during-run", "on"]


class Settings(BaseSettings):
    """Every knob of the service; the defaults serve the installed models on loopback.

    Folder defaults come from facebridge.paths: ./models, ./mappings and ./cache in a source checkout,
    the per-user data/cache folders and the packaged mapping bank otherwise.
    """

    model_config = SettingsConfigDict(env_prefix="FACEBRIDGE_", env_file=".env", extra="ignore")

    models_dir: Path = Field(default_factory=default_models_dir)
    manifest: Path | None = Field(
        default=None, description="default: MODELS_DIR/manifest.toml if present, else the shipped one"
    )
    user_manifest: Path | None = Field(
        default=None,
        description="entries added by `facebridge models add`, overlaid on the manifest; "
        "default: MODELS_DIR/user-manifest.toml",
    )
    load_models: list[str] | None = Field(
        default=None, description="ids to load; default every installed one"
    )
    providers: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(default=0, ge=0)
    ort_spinning: Spinning = Field(
        default="off",
        description="what onnxruntime's worker threads do while they wait for work: sleep ('off', the "
        "default), busy-wait only while a run lasts ('during-run': one request at a time 7-15% faster "
        "on 2 cores, under concurrent requests slower), or busy-wait after a run too ('on', "
        "onnxruntime's default); facebridge/vision/runtime.py",
    )
    blas_threads: int = Field(
        default=1,
        ge=0,
        description="OpenBLAS threads for the service's own matrix products (maps, cohort scores); 0: "
        "OpenBLAS's default, every core. One measured fastest for single and bulk requests on 2 "
        "cores, where extra threads spin on the cores the event loop needs (docs/translate.md)",
    )
    micro_batch_ms: float = Field(
        default=0.0,
        ge=0,
        description="/embed: wait up to this long to batch concurrent requests (0: off; measured no gain "
        "on a 2-core CPU, meant for GPUs where a batch costs little more than one face)",
    )
    micro_batch_max: int = Field(default=32, gt=0, description="/embed: most crops in one micro-batch")
    cache_dir: Path = Field(default_factory=default_cache_dir)
    mappings_dir: Path = Field(default_factory=default_mappings_dir)
    cohort_dir: Path | None = Field(
        default=None,
        description="cohort files (facebridge cohort build) of the deployment's own people: scores are "
        "AS-normalised against them; reloaded with the maps",
    )
    calibration_file: Path | None = Field(
        default=None,
        description="a deployment calibration (facebridge calibrate) that overrides the shipped thresholds",
    )
    max_embeddings_per_request: int = Field(default=100_000, gt=0)
    max_pairs_per_request: int = Field(default=10_000, gt=0)
    max_request_bytes: int = Field(default=256 * 1024 * 1024, gt=0)

    default_recognizer: str = "arcface-mbf128"
    default_detector: str = "yunet"
    detection_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    max_images_per_request: int = Field(default=32, gt=0)
    max_faces_per_image: int = Field(default=32, gt=0)

    api_keys: str | None = Field(
        default=None,
        description="comma-separated plain keys, each with every scope; never logged",
        repr=False,
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="scoped, hashed keys written by `facebridge keys create` (re-read when it changes and "
        "on SIGHUP); an older file of plain keys, one per line, still works with every scope",
    )
    auth_disabled: bool = Field(default=False, description="serve without keys (development only)")
    key_rate_per_s: float = Field(
        default=0.0, ge=0, description="requests per second per API key (token bucket; 0: no limit)"
    )
    key_burst: float | None = Field(
        default=None, ge=0, description="token bucket size per key (default: the rate, at least 1)"
    )
    key_max_concurrent: int = Field(default=0, ge=0, description="requests in flight per key (0: no limit)")
    audit_log: Path | None = Field(
        default=None,
        description="append-only JSON lines: erasures, pair recordings, reloads, refused requests; "
        "default ./.facebridge/audit.log in a checkout, else the per-user data folder (a default that "
        "cannot be written is logged as an error; a path set here that cannot be written stops the start)",
    )
    metrics_public: bool = Field(default=True, description="/metrics without an API key")
    console: bool = Field(default=True, description="the read-only operator console at /console")

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes (each loads the models)")
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field(default="text", description="json: one object per line")
    max_in_flight: int = Field(default=64, gt=0, description="requests served at once; more get 429")
    request_time_budget_s: float | None = Field(
        default=60.0, gt=0, description="answer 503 when a request has not started answering by then"
    )
    shutdown_grace_s: float = Field(default=30.0, gt=0, description="time to finish in-flight requests")

    # the paired-template store (docs/pairs.md): off unless one of the two is set
    pairs_db: Path | None = Field(default=None, description="SQLite file that records template pairs")
    pairs_dsn: str | None = Field(
        default=None, description="PostgreSQL DSN for the pair store (wins over pairs_db)", repr=False
    )
    pairs_retention_days: float = Field(default=180.0, ge=0, description="drop pairs older (0: keep)")
    pairs_max_rows: int = Field(default=1_000_000, ge=0, description="most pairs per model pair (0: no cap)")
    pairs_sqlite_sync: Literal["full", "normal"] = Field(
        default="full",
        description="full: each recorded pair is fsynced before the answer (survives a power cut); normal: "
        "committed before the answer, synced at checkpoints (survives a crash of the service, saves an "
        "fsync per request); erasure is always fsynced",
    )

    @cached_property
    def audit_log_path(self) -> Path:
        return self.audit_log if self.audit_log is not None else default_audit_log()

    @cached_property
    def manifest_path(self) -> Path:
        if self.manifest is not None:
            return self.manifest
        local = self.models_dir / "manifest.toml"
        return local if local.is_file() else shipped_manifest()

    @cached_property
    def user_manifest_path(self) -> Path:
        default = self.models_dir / "user-manifest.toml"
        return self.user_manifest if self.user_manifest is not None else default

    def load_manifest(self) -> Manifest:
        """The manifest in force: the base one with the user's added models overlaid."""
        base = load_manifest(self.manifest_path)
        user = self.user_manifest_path
        return overlay_manifest(base, user) if user.is_file() else base
