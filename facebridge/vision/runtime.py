"""onnxruntime sessions: provider choice and thread settings in one place.

A silent fall-back from CUDA to CPU is the most common surprise with onnxruntime, so the providers a
session really got are read back from the session and logged, not assumed from what was asked for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, get_args

import onnxruntime as ort

from facebridge.config import Spinning

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


SPINNING_MODES: tuple[Spinning, ...] = get_args(Spinning)


def session_options(intra_op_threads: int = 0, spinning: Spinning = "off") -> ort.SessionOptions:
    """Full graph optimisation; `intra_op_threads` 0 lets onnxruntime use every core.

    `spinning` is what onnxruntime's worker threads do while they wait for work (measured on 2 cores,
    `python -m benchmarks.ort_spinning`, docs/lfw-native.md#embed-speed):
    - "off" (the default): they sleep. Under concurrent /embed requests the runs share the cores
      without busy-waiting for each other;
    - "during-run": they busy-wait inside a run, between its operators, and sleep as soon as it
      returns (`session.force_spinning_stop`). One request at a time on a quiet machine, a batch-1
      run no longer waits for sleeping threads to wake for each operator: /embed 7 to 15% faster;
      but with two clients at once 10 to 31% fewer faces per second, and slower /verify answers
      beside them. For a service that sees one request at a time (a kiosk, a door);
    - "on": onnxruntime's default, spinning after a run as well, on the cores the event loop, the
      other requests and (on a shared machine) other processes need: a batch-1 run took about twice
      as long in the service with it (arcface-mbf128: 24 ms against 12 ms).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    if spinning == "off":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    elif spinning == "during-run":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def create_session(
    path: Path, providers: list[str], intra_op_threads: int = 0, spinning: Spinning = "off"
) -> ort.InferenceSession:
    """Open one session for a model file and log the providers it actually uses."""
    session = ort.InferenceSession(
        str(path), sess_options=session_options(intra_op_threads, spinning), providers=providers
    )
    used = session.get_providers()
    if providers[0] not in used:
        log.warning("%s: asked for %s, onnxruntime gave %s", path.name, providers, used)
    else:
        log.info("%s: providers %s", path.name, used)
    return session
