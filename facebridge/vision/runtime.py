"""onnxruntime sessions: provider choice and thread settings in one place.

A silent fall-back from CUDA to CPU is the most common surprise with onnxruntime, so the providers a
session really got are read back from the session and logged, not assumed from what was asked for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import onnxruntime as ort

log = logging.getLogger(__name__)

ProviderPreference = Literal["auto", "cpu", "cuda"]

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(preference: ProviderPreference = "auto") -> list[str]:
    """Providers to request: CUDA first when the installed onnxruntime offers it, CPU always last."""
    available = ort.get_available_providers()
    if preference == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if preference == "cuda":
        log.warning("CUDA requested but this onnxruntime offers only %s; using CPU", available)
    return [CPU]


def session_options(intra_op_threads: int = 0, spinning: bool = False) -> ort.SessionOptions:
    """Full graph optimisation; `intra_op_threads` 0 lets onnxruntime use every core.

    Without `spinning`, onnxruntime's worker threads sleep between runs instead of busy-waiting for
    the next one: spinning threads take the cores the event loop, the other requests and (on a shared
    machine) other processes need. Measured on 2 cores (docs/lfw-native.md#embed-speed): with spinning
    a batch-1 run took about twice as long (arcface-mbf128: 24 ms against 12 ms).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def create_session(path: Path, providers: list[str], intra_op_threads: int = 0) -> ort.InferenceSession:
    """Open one session for a model file and log the providers it actually uses."""
    session = ort.InferenceSession(
        str(path), sess_options=session_options(intra_op_threads), providers=providers
    )
    used = session.get_providers()
    if providers[0] not in used:
        log.warning("%s: asked for %s, onnxruntime gave %s", path.name, providers, used)
    else:
        log.info("%s: providers %s", path.name, used)
    return session
