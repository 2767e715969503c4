"""Where facebridge finds its files: a source checkout's folders, or package data and per-user folders.

Run from a checkout (the working directory holds facebridge's pyproject.toml), the service uses
./models, ./mappings and ./cache as it always has. Installed from a wheel and run anywhere else, the
model manifest and the shipped mapping bank come from the package itself (importlib.resources) and
model files and caches go to the per-user data and cache folders (platformdirs), so that
`pip install facebridge` followed by `facebridge models fetch` and `facebridge serve` works from any
directory.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from platformdirs import user_cache_path, user_data_path

APP_NAME = "facebridge"


def in_checkout(cwd: Path | None = None) -> bool:
    """True when the working directory is a facebridge source checkout."""
    pyproject = (cwd or Path.cwd()) / "pyproject.toml"
    try:
        return pyproject.is_file() and 'name = "facebridge"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        return False


def _source_tree() -> Path | None:
    """The checkout this module was imported from (an editable install), if any."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "mappings").is_dir() and (root / "models" / "manifest.toml").is_file() else None


def _package_data(*parts: str) -> Path:
    """A folder of package data inside the installed facebridge package (wheels install it unzipped)."""
    return Path(str(importlib.resources.files("facebridge").joinpath("data", *parts)))


def shipped_manifest() -> Path:
    """The model manifest that ships with this version of facebridge."""
    tree = _source_tree()
    if tree is not None:
        return tree / "models" / "manifest.toml"
    return _package_data("models") / "manifest.toml"


def shipped_mappings_dir() -> Path:
    """The mapping bank that ships with this version (read-only when installed from a wheel)."""
    tree = _source_tree()
    return tree / "mappings" if tree is not None else _package_data("mappings")


def default_models_dir() -> Path:
    return Path("models") if in_checkout() else user_data_path(APP_NAME) / "models"


def default_mappings_dir() -> Path:
    return Path("mappings") if in_checkout() else shipped_mappings_dir()


def default_cache_dir() -> Path:
    return Path("cache") if in_checkout() else user_cache_path(APP_NAME)


def default_audit_log() -> Path:
    """./.facebridge/audit.log in a checkout (beside `make serve`'s keys), else the per-user data folder."""
    return Path(".facebridge") / "audit.log" if in_checkout() else user_data_path(APP_NAME) / "audit.log"
