"""onnxruntime session options: what each spinning mode sets, and that none changes an embedding."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from facebridge.config import Settings
from facebridge.vision.loading import open_registry
from facebridge.vision.recognizer import Recognizer
from facebridge.vision.runtime import SPINNING_MODES, Spinning, create_session, session_options

from .conftest import MODELS_DIR

SPIN_KEYS = (
    "session.intra_op.allow_spinning",
    "session.inter_op.allow_spinning",
    "session.force_spinning_stop",
)


def config_entries(options: ort.SessionOptions) -> dict[str, str | None]:
    """The spinning keys as set on `options` (None: left at onnxruntime's default)."""
    entries: dict[str, str | None] = {}
    for key in SPIN_KEYS:
        try:
            entries[key] = options.get_session_config_entry(key)
        except Exception:  # onnxruntime raises for a key that was never set
            entries[key] = None
    return entries


@pytest.mark.fast
def test_each_spinning_mode_sets_exactly_its_keys() -> None:
    assert config_entries(session_options()) == config_entries(session_options(spinning="off"))
    assert config_entries(session_options(spinning="during-run")) == {
        "session.intra_op.allow_spinning": None,
        "session.inter_op.allow_spinning": None,
        "session.force_spinning_stop": "1",
    }
    assert config_entries(session_options(spinning="off")) == {
        "session.intra_op.allow_spinning": "0",
        "session.inter_op.allow_spinning": "0",
        "session.force_spinning_stop": None,
    }
    assert config_entries(session_options(spinning="on")) == dict.fromkeys(SPIN_KEYS)
    assert session_options(3).intra_op_num_threads == 3


@pytest.mark.fast
def test_settings_take_the_mode_from_the_environment_and_refuse_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FACEBRIDGE_ORT_SPINNING", raising=False)
    assert Settings().ort_spinning == "off"
    monkeypatch.setenv("FACEBRIDGE_ORT_SPINNING", "during-run")
    assert Settings().ort_spinning == "during-run"
    monkeypatch.setenv("FACEBRIDGE_ORT_SPINNING", "sometimes")
    with pytest.raises(ValidationError, match="ort_spinning"):
        Settings()


def test_every_mode_gives_the_same_embeddings_and_the_registry_uses_the_setting() -> None:
    settings = Settings(models_dir=MODELS_DIR, providers="cpu", ort_spinning="during-run")
    registry = open_registry(settings, model_ids=["dlib-r29-128"])
    assert registry.spinning == "during-run"
    served = registry.recognizer("dlib-r29-128")
    entry = served.entry
    size = entry.size or 150
    pixels = np.random.default_rng(7).integers(0, 256, (3, size, size, 3)).astype(np.uint8)
    crops = list(pixels)
    expected = served.embed(crops)
    for mode in SPINNING_MODES:
        spinning: Spinning = mode
        session = create_session(MODELS_DIR / entry.file, ["CPUExecutionProvider"], 0, spinning)
        np.testing.assert_allclose(Recognizer(entry, session, "").embed(crops), expected, atol=1e-6)
