"""The user manifest: the overlay file that `facebridge models add` writes entries into.

The base manifest ships with facebridge; models a deployment adds go into a second TOML file whose
entries replace base entries of the same id (facebridge/vision/manifest.py reads both). Writing it is
kept apart from reading it: only the writer needs a TOML emitter (tomllib reads, it does not write),
and every write is checked as an overlay before it replaces the old file, so a bad entry can never
stop the service from starting.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from facebridge.config import Settings
from facebridge.exceptions import FacebridgeError
from facebridge.vision.manifest import ModelEntry, load_manifest, overlay_manifest


class UserManifestError(FacebridgeError, ValueError):
    """An entry cannot go into the user manifest (or the file cannot be read); the message says why."""


def check_entry(entry: Mapping[str, Any]) -> ModelEntry:
    """`entry` as a ModelEntry, or a UserManifestError naming what is wrong (a bad id, most likely)."""
    try:
        return ModelEntry.model_validate(dict(entry))
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        message = f"entry {entry.get('id')!r} is not a valid manifest entry: {reasons}"
        raise UserManifestError(message) from exc


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(value: str) -> str:
    escaped = []
    for char in value:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_value(value: Any) -> str:
    """One TOML value: str, bool, int, float, list or (inline) table; anything else is refused."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_user_manifest(
    templates: Mapping[str, Mapping[str, Any]], models: Sequence[Mapping[str, Any]]
) -> str:
    """The user manifest's text: `[templates.NAME]` tables, then one `[[models]]` table per entry."""
    lines = [
        "# facebridge user manifest: models added with `facebridge models add`, overlaid on the base",
        "# manifest (an entry here replaces a base entry of the same id). Written by facebridge.",
    ]
    for name, template in templates.items():
        lines += ["", f"[templates.{_toml_key(name)}]"]
        lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in template.items()]
    for model in models:
        lines += ["", "[[models]]"]
        lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in model.items() if v is not None]
    return "\n".join(lines) + "\n"


def read_user_manifest(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(templates, models) of an existing user manifest; empty when there is none yet."""
    if not path.is_file():
        return {}, []
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise UserManifestError(f"{path}: not valid TOML ({exc}); fix or remove it first") from exc
    return dict(data.get("templates", {})), list(data.get("models", []))


def _atomic_write(path: Path, text: str) -> Path:
    """Write to a temporary file beside `path` and return it (the caller moves it into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(handle.name)


def write_user_entry(
    target: Settings | Path,
    entry: Mapping[str, Any],
    templates: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Add or replace `entry` (by id) in the user manifest, keeping every other entry; returns its path.

    The file is written beside itself and moved into place, so a crash leaves the old file intact. Given
    Settings, the result is validated as an overlay on the base manifest before it replaces the old
    file, so a bad entry can never stop `load_manifest()` (and with it the service) from starting.
    """
    settings = target if isinstance(target, Settings) else None
    path = target.user_manifest_path if isinstance(target, Settings) else Path(target)
    check_entry(entry)
    old_templates, models = read_user_manifest(path)
    models = [m for m in models if m.get("id") != entry["id"]] + [dict(entry)]
    tmp = _atomic_write(path, dump_user_manifest({**old_templates, **(templates or {})}, models))
    try:
        if settings is not None:
            overlay_manifest(load_manifest(settings.manifest_path), tmp)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except ValueError as exc:
        raise UserManifestError(f"the user manifest would not load with this entry: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path
