"""Installing model files into the models folder: from a local folder or the entry's public source.

Every file is written to a temporary name, checked against the manifest's sha256 and only then moved
into place, so a half-copied or tampered file is never picked up by the service.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import IO

from tqdm import tqdm

from facebridge.progress import bar_disabled
from facebridge.vision.manifest import ModelEntry, sha256_file


class FetchError(RuntimeError):
    """A model file could not be installed; the message says why."""


def _copy_with_progress(src: IO[bytes], dst: IO[bytes], total: int | None, label: str, progress: bool) -> str:
    digest = hashlib.sha256()
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=bar_disabled(progress)) as bar:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _download(url: str, target: IO[bytes], label: str, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            _copy_with_progress(response, target, total, label, progress)
    except OSError as exc:
        raise FetchError(f"could not download {url}: {exc}") from exc


def fetch_model(
    entry: ModelEntry,
    models_dir: Path,
    from_dir: Path | None = None,
    accept_unpinned: bool = False,
    progress: bool = True,
) -> Path:
    """Install `entry.file` into `models_dir`; returns its path. Raises FetchError with the reason."""
    models_dir.mkdir(parents=True, exist_ok=True)
    destination = models_dir / entry.file
    if destination.is_file() and entry.sha256 and sha256_file(destination) == entry.sha256:
        return destination
    with tempfile.NamedTemporaryFile(dir=models_dir, suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            if from_dir is not None:
                source = from_dir / entry.file
                if not source.is_file():
                    raise FetchError(f"{entry.id}: {entry.file} is not in {from_dir}")
                with source.open("rb") as src:
                    _copy_with_progress(src, tmp, source.stat().st_size, entry.id, progress)
            elif entry.source.url is None:
                raise FetchError(
                    f"{entry.id}: no public download; copy it with --from DIR ({entry.source.note})"
                )
            elif entry.source.member is None:
                _download(entry.source.url, tmp, entry.id, progress)
            else:
                with tempfile.TemporaryFile() as archive:
                    _download(entry.source.url, archive, entry.id, progress)
                    archive.seek(0)
                    with zipfile.ZipFile(archive) as zipped, zipped.open(entry.source.member) as member:
                        shutil.copyfileobj(member, tmp)
            tmp.close()
            digest = sha256_file(tmp_path)
            if entry.sha256 is None and not accept_unpinned:
                raise FetchError(
                    f"{entry.id}: the manifest pins no sha256 (this file hashes to {digest}); "
                    "pass --accept-unpinned to install it anyway and pin that hash in the manifest"
                )
            if entry.sha256 is not None and digest != entry.sha256:
                raise FetchError(f"{entry.id}: sha256 {digest} does not match the manifest's {entry.sha256}")
            tmp_path.chmod(
                0o644
            )  # temporary files are private; installed models are readable by the service user
            os.replace(tmp_path, destination)
        finally:
            tmp_path.unlink(missing_ok=True)
    return destination
