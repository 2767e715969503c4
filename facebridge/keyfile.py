"""The API keys file: who may call the service, with which scopes and limits; never a key in clear.

A keys file (FACEBRIDGE_API_KEYS_FILE) is a JSON document written by `facebridge keys`:

    {"format": "facebridge-api-keys", "version": 1, "keys": [
      {"id": "3f9a1c2e", "name": "gallery-sync", "scopes": ["translate", "verify"],
       "hash": "scrypt$16384$8$1$<salt, base64>$<digest, base64>",
       "created": "2026-11-30T10:00:00Z", "expires": "2027-06-01T00:00:00Z", "revoked": false,
       "limits": {"rate_per_s": 20, "burst": 40, "max_concurrent": 4}}]}

A key is `fb_<id>_<secret>`: the id lets the service find the one entry to check, and only a salted
scrypt hash of the whole key is stored (each entry its own salt). The key itself is printed once, when
it is created or rotated, and is never written anywhere by facebridge.

An older keys file with one plain key per line (`#` comments) still loads: each line is a key with every
scope, and the service says at start-up that `facebridge keys create` should replace it.

This module imports nothing heavy (no FastAPI), so the `facebridge keys` commands start fast.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

FORMAT = "facebridge-api-keys"
VERSION = 1
KEY_PREFIX = "fb"

# what each scope allows (the routes that need each: facebridge/service/security.py and docs/hardening.md)
SCOPES: dict[str, str] = {
    "embed": "POST /embed: detect, align and embed photos",
    "translate": "POST /translate: carry templates into another model's space",
    "verify": "POST /verify: compare templates or photos",
    "pairs:record": "POST /pairs, and /embed with `record`: write template pairs to the pair store",
    "pairs:read": "GET /pairs/stats and /pairs/timeline: what the pair store holds",
    "pairs:erase": "DELETE /pairs: erase a subject's pairs",
    "admin": "POST /admin/*: reload mappings, cohorts and calibrations",
}
ALL_SCOPES: tuple[str, ...] = tuple(SCOPES)

# scrypt's interactive parameters (16 MiB, ~0.1 s): paid once per key and process, then cached
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
_ID = re.compile(r"^[0-9a-f]{8}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class KeyFileError(ValueError):
    """A keys file that cannot be read or a change to it that cannot be made."""


# ---------------------------------------------------------------------------------------------- hashing
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_key(key: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$digest` of `key`, with a fresh 16-byte salt unless one is given."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        key.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_hash(key: str, stored: str) -> bool:
    """Whether `key` is the key `stored` (a hash_key string) was made from; slow on purpose."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            key.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def split_key(key: str) -> tuple[str, str] | None:
    """(id, secret) of a `fb_<id>_<secret>` key; None for anything else (e.g. a plain key)."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not _ID.match(parts[1]) or not parts[2]:
        return None
    return parts[1], parts[2]


def new_key(key_id: str) -> str:
    return f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


# ---------------------------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class KeyLimits:
    """Per-key limits; None: the service's default (FACEBRIDGE_KEY_*), 0: no limit for this key."""

    rate_per_s: float | None = None
    burst: float | None = None
    max_concurrent: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> KeyLimits:
        if raw is None:
            return cls()
        if not isinstance(raw, dict) or set(raw) - {"rate_per_s", "burst", "max_concurrent"}:
            raise KeyFileError(f"{where}.limits: an object with rate_per_s, burst and/or max_concurrent")
        for name, value in raw.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise KeyFileError(f"{where}.limits.{name}: a number >= 0")
        concurrent = raw.get("max_concurrent")
        return cls(raw.get("rate_per_s"), raw.get("burst"), None if concurrent is None else int(concurrent))


@dataclass(frozen=True)
class KeyEntry:
    id: str
    name: str
    hash: str = field(repr=False)
    scopes: tuple[str, ...]
    created: datetime
    expires: datetime | None = None
    revoked: bool = False
    revoked_at: datetime | None = None
    rotated: datetime | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or datetime.now(UTC)) >= self.expires

    def state(self, now: datetime | None = None) -> str:
        return "revoked" if self.revoked else "expired" if self.expired(now) else "active"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "hash": self.hash,
            "created": iso(self.created),
            "expires": iso(self.expires) if self.expires else None,
            "revoked": self.revoked,
        }
        if self.revoked_at:
            out["revoked_at"] = iso(self.revoked_at)
        if self.rotated:
            out["rotated"] = iso(self.rotated)
        if self.limits.to_json():
            out["limits"] = self.limits.to_json()
        return out

    @classmethod
    def from_json(cls, raw: Any, index: int) -> KeyEntry:
        where = f"keys[{index}]"
        if not isinstance(raw, dict):
            raise KeyFileError(f"{where}: an object")
        for name in ("id", "name", "hash", "created"):
            if not isinstance(raw.get(name), str):
                raise KeyFileError(f"{where}.{name}: a string is required")
        if not _ID.match(raw["id"]):
            raise KeyFileError(f"{where}.id: 8 lowercase hex digits, got {raw['id']!r}")
        if not raw["hash"].startswith("scrypt$"):
            raise KeyFileError(f"{where}.hash: a scrypt hash (scrypt$N$r$p$salt$digest)")
        scopes = raw.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise KeyFileError(f"{where}.scopes: a list of scope names")
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise KeyFileError(f"{where}.scopes: unknown {unknown}; known: {', '.join(SCOPES)}")
        return cls(
            id=raw["id"],
            name=raw["name"],
            hash=raw["hash"],
            scopes=tuple(scopes),
            created=parse_time(raw["created"], f"{where}.created"),
            expires=parse_time(raw["expires"], f"{where}.expires") if raw.get("expires") else None,
            revoked=bool(raw.get("revoked", False)),
            revoked_at=parse_time(raw["revoked_at"], where) if raw.get("revoked_at") else None,
            rotated=parse_time(raw["rotated"], where) if raw.get("rotated") else None,
            limits=KeyLimits.from_json(raw.get("limits"), where),
        )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, where: str = "time") -> datetime:
    """An ISO date (the start of that day, UTC) or date-time (UTC unless it names a zone)."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = date.fromisoformat(text.strip())
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise KeyFileError(f"{where}: not an ISO date or date-time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- files
@dataclass(frozen=True)
class KeyFile:
    """What a keys file holds: scoped entries, or (an older file) plain keys, one per line."""

    entries: tuple[KeyEntry, ...] = ()
    plain: tuple[str, ...] = ()

    @property
    def legacy(self) -> bool:
        return bool(self.plain)

    def find(self, which: str) -> KeyEntry:
        """The entry with this id, else the one with this name (a live one before revoked ones)."""
        for entry in self.entries:
            if entry.id == which:
                return entry
        named = [e for e in self.entries if e.name == which]
        live = [e for e in named if not e.revoked] or named
        if not live:
            raise KeyFileError(f"no key with id or name {which!r} (facebridge keys list shows them)")
        if len(live) > 1:
            raise KeyFileError(
                f"several keys are named {which!r}: give the id ({', '.join(e.id for e in live)})"
            )
        return live[0]

    def replaced(self, entry: KeyEntry) -> KeyFile:
        return KeyFile(tuple(entry if e.id == entry.id else e for e in self.entries))

    def to_text(self) -> str:
        document = {"format": FORMAT, "version": VERSION, "keys": [e.to_json() for e in self.entries]}
        return json.dumps(document, indent=2) + "\n"


def parse_keys(text: str, where: str = "keys file") -> KeyFile:
    """A keys file's content: the JSON document, or the older one-plain-key-per-line form."""
    if not text.lstrip().startswith("{"):
        lines = (line.strip() for line in text.splitlines())
        return KeyFile(plain=tuple(line for line in lines if line and not line.startswith("#")))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise KeyFileError(f'{where}: not a facebridge keys file (no "format": "{FORMAT}")')
    if document.get("version") != VERSION:
        raise KeyFileError(f"{where}: version {document.get('version')!r}; this facebridge reads {VERSION}")
    raw = document.get("keys")
    if not isinstance(raw, list):
        raise KeyFileError(f'{where}: "keys" must be a list')
    entries = tuple(KeyEntry.from_json(item, i) for i, item in enumerate(raw))
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise KeyFileError(f"{where}: a key id appears twice")
    return KeyFile(entries)


def read_keys(path: Path) -> KeyFile:
    if not path.is_file():
        raise KeyFileError(f"{path} is not a readable file")
    return parse_keys(path.read_text(encoding="utf-8"), str(path))


def write_keys(path: Path, keys: KeyFile) -> None:
    """Replace `path` atomically (a 0600 temporary file in the same folder, fsynced, renamed over it)."""
    if keys.legacy:
        raise KeyFileError("refusing to write plain keys: only hashed entries are written")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(keys.to_text())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def editing(path: Path) -> Iterator[KeyFile]:
    """Hold the file's lock (a `.lock` beside it) while it is read, changed and written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = read_keys(path) if path.exists() else KeyFile()
        if current.legacy:
            raise KeyFileError(
                f"{path} holds plain keys (one per line); create the scoped keys in a new file and point "
                "FACEBRIDGE_API_KEYS_FILE at it"
            )
        yield current
    finally:
        os.close(lock)


# ---------------------------------------------------------------------------------------------- changes
def create_key(
    path: Path,
    name: str,
    scopes: Sequence[str],
    expires: datetime | None = None,
    limits: KeyLimits | None = None,
    now: datetime | None = None,
) -> tuple[KeyEntry, str]:
    """Add a key to the file (created if missing); returns its entry and the key, shown only now."""
    if not _NAME.match(name):
        raise KeyFileError(f"name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-'")
    wanted = list(dict.fromkeys(ALL_SCOPES if "all" in scopes else scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise KeyFileError(f"unknown scope(s) {unknown}; choose from {', '.join(SCOPES)} (or all)")
    with editing(path) as current:
        if any(e.name == name and not e.revoked for e in current.entries):
            raise KeyFileError(f"a live key is already named {name!r}: rotate it or choose another name")
        taken = {e.id for e in current.entries}
        key_id = secrets.token_hex(4)
        while key_id in taken:
            key_id = secrets.token_hex(4)
        key = new_key(key_id)
        entry = KeyEntry(
            id=key_id,
            name=name,
            hash=hash_key(key),
            scopes=tuple(wanted),
            created=(now or datetime.now(UTC)).replace(microsecond=0),
            expires=expires,
            limits=limits or KeyLimits(),
        )
        write_keys(path, KeyFile((*current.entries, entry)))
    return entry, key


def revoke_key(path: Path, which: str, now: datetime | None = None) -> KeyEntry:
    with editing(path) as current:
        entry = current.find(which)
        if not entry.revoked:
            entry = replace(entry, revoked=True, revoked_at=(now or datetime.now(UTC)).replace(microsecond=0))
            write_keys(path, current.replaced(entry))
    return entry


def rotate_key(path: Path, which: str, now: datetime | None = None) -> tuple[KeyEntry, str]:
    """A new secret for an entry (same id, name, scopes, limits, expiry); the old key stops working."""
    with editing(path) as current:
        entry = current.find(which)
        if entry.revoked:
            raise KeyFileError(f"key {entry.id} ({entry.name}) is revoked: create a new key instead")
        key = new_key(entry.id)
        entry = replace(entry, hash=hash_key(key), rotated=(now or datetime.now(UTC)).replace(microsecond=0))
        write_keys(path, current.replaced(entry))
    return entry, key
