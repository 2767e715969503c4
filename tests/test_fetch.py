"""`models fetch` installs verified files only."""

from __future__ import annotations

from pathlib import Path

import pytest

from facebridge.cli import main
from facebridge.vision.fetch import FetchError, fetch_model
from facebridge.vision.manifest import load_manifest, sha256_file

from .conftest import MODELS_DIR, SHARED_MODELS

MANIFEST = load_manifest(MODELS_DIR / "manifest.toml")


def test_fetch_from_local_folder_verifies_hash(tmp_path: Path) -> None:
    entry = MANIFEST.get("yunet")
    assert entry is not None
    path = fetch_model(entry, tmp_path / "models", SHARED_MODELS, progress=False)
    assert sha256_file(path) == entry.sha256
    assert list((tmp_path / "models").iterdir()) == [path]  # no temporary file left behind


def test_fetch_refuses_a_file_with_the_wrong_hash(tmp_path: Path) -> None:
    entry = MANIFEST.get("yunet")
    assert entry is not None
    source = tmp_path / "src"
    source.mkdir()
    (source / entry.file).write_bytes(b"not the model")
    with pytest.raises(FetchError, match="does not match"):
        fetch_model(entry, tmp_path / "models", source, progress=False)
    assert list((tmp_path / "models").iterdir()) == []


def test_fetch_refuses_unpinned_without_consent(tmp_path: Path) -> None:
    entry = MANIFEST.get("buffalo_l-r50")
    assert entry is not None and entry.sha256 is None
    source = tmp_path / "src"
    source.mkdir()
    (source / entry.file).write_bytes(b"weights")
    with pytest.raises(FetchError, match="pins no sha256"):
        fetch_model(entry, tmp_path / "models", source, progress=False)
    path = fetch_model(entry, tmp_path / "models", source, accept_unpinned=True, progress=False)
    assert path.read_bytes() == b"weights"


def test_fetch_without_source_says_why(tmp_path: Path) -> None:
    entry = MANIFEST.get("arcface-mbf128")
    assert entry is not None
    with pytest.raises(FetchError, match="no public download"):
        fetch_model(entry, tmp_path, progress=False)


def test_cli_fetch_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "models"
    assert (
        main(
            [
                "models",
                "fetch",
                "yunet",
                "scrfd-500m",
                "--from",
                str(SHARED_MODELS),
                "--models-dir",
                str(target),
            ]
        )
        == 0
    )
    assert main(["models", "fetch", "nope", "--models-dir", str(target)]) == 2
    assert main(["models", "list", "--models-dir", str(target)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith("id ")}
    assert "available" in rows["yunet"] and "unavailable" in rows["arcface-mbf128"]
