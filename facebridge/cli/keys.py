"""`facebridge keys create|list|revoke|rotate`: scoped API keys in a keys file, stored only as hashes.

    facebridge keys create --file keys.json --name gallery-sync --scope translate --scope verify
    facebridge keys list --file keys.json
    facebridge keys rotate --file keys.json gallery-sync     # new secret, same id, name and scopes
    facebridge keys revoke --file keys.json 3f9a1c2e

`create` and `rotate` print the key once, as the last line of their output; nothing else keeps it. A
running service reads the changed file within a second (or on SIGHUP). The file is rewritten atomically
with mode 0600. See facebridge/keyfile.py for the format and docs/hardening.md for which route needs
which scope.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from facebridge.keyfile import SCOPES

FILE_HELP = "the keys file (default: $FACEBRIDGE_API_KEYS_FILE); created by the first `keys create`"


def _file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    from_env = os.environ.get("FACEBRIDGE_API_KEYS_FILE")
    if not from_env:
        raise SystemExit("error: give --file (or set FACEBRIDGE_API_KEYS_FILE)")
    return Path(from_env)


def _describe_limits(limits: object, short: bool = False) -> str:
    from facebridge.keyfile import KeyLimits

    assert isinstance(limits, KeyLimits)
    parts = []
    if limits.rate_per_s is not None:
        parts.append(f"{limits.rate_per_s:g}/s" if limits.rate_per_s else "no rate limit")
    if limits.burst is not None:
        parts.append(f"burst {limits.burst:g}")
    if limits.max_concurrent is not None:
        parts.append(
            f"{limits.max_concurrent} in flight" if limits.max_concurrent else "no concurrency limit"
        )
    return ", ".join(parts) or ("defaults" if short else "the service's defaults (FACEBRIDGE_KEY_*)")


def cmd_create(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from facebridge.keyfile import KeyFileError, KeyLimits, create_key, iso, parse_time

    path = _file(args)
    try:
        expires = parse_time(args.expires, "--expires") if args.expires else None
        limits = KeyLimits(args.rate, args.burst, args.concurrency)
        entry, key = create_key(path, args.name, args.scope, expires, limits)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created key {entry.id} ({entry.name}) in {path}")
    print(f"  scopes:  {', '.join(entry.scopes)}")
    print(f"  expires: {iso(entry.expires) if entry.expires else 'never'}")
    if entry.expires is not None and entry.expires <= datetime.now(UTC):
        print("  warning: that time is already past: the key is refused from the start")
    print(f"  limits:  {_describe_limits(entry.limits)}")
    print("The key is shown only now (the file keeps a salted scrypt hash); send it as the X-API-Key header:")
    print(key, flush=True)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from facebridge.keyfile import KeyFileError, iso, read_keys

    path = _file(args)
    try:
        keys = read_keys(path)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if keys.legacy:
        print(
            f"{path} holds {len(keys.plain)} plain key(s), one per line, each with every scope; move to "
            "scoped keys: facebridge keys create --file NEW.json --name NAME --scope SCOPE"
        )
        return 0
    rows = [
        {
            "id": e.id,
            "name": e.name,
            "scopes": list(e.scopes),
            "created": iso(e.created),
            "expires": iso(e.expires) if e.expires else None,
            "revoked": e.revoked,
            "state": e.state(),
            "limits": e.limits.to_json(),
        }
        for e in keys.entries
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'id':<9} {'name':<20} {'state':<8} {'expires':<21} {'limits':<24} scopes")
    for row, entry in zip(rows, keys.entries, strict=True):
        print(
            f"{row['id']:<9} {row['name']:<20} {row['state']:<8} {row['expires'] or 'never':<21} "
            f"{_describe_limits(entry.limits, short=True):<24} {', '.join(entry.scopes)}"
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from facebridge.keyfile import KeyFileError, revoke_key

    try:
        entry = revoke_key(_file(args), args.key)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"revoked key {entry.id} ({entry.name}); a running service refuses it within a second")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from facebridge.keyfile import KeyFileError, rotate_key

    try:
        entry, key = rotate_key(_file(args), args.key)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rotated key {entry.id} ({entry.name}): same scopes ({', '.join(entry.scopes)}), new secret")
    print("The old key stops working within a second. The new key is shown only now:")
    print(key, flush=True)
    return 0


def _which(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="ID|NAME", help="the key's id (from `keys list`) or its name")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    keys = sub.add_parser(
        "keys",
        help="create, list, revoke and rotate scoped API keys (a keys file of hashes)",
        description=__doc__.split("\n\n")[0],
    )
    commands = keys.add_subparsers(dest="keys_command", required=True)

    create = commands.add_parser(
        "create",
        help="add a key with the given scopes; prints the key once, as the last line",
        description="Add a key to the keys file (created with mode 0600 if missing) and print it once. "
        "Scopes: " + "; ".join(f"{name}: {what}" for name, what in SCOPES.items()) + ".",
    )
    create.add_argument("--file", help=FILE_HELP)
    create.add_argument("--name", required=True, help="a unique label for the key, e.g. the client's name")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[*SCOPES, "all"],
        metavar="SCOPE",
        help=f"a scope the key gets (repeat for several): {', '.join(SCOPES)}, or all",
    )
    create.add_argument(
        "--expires",
        metavar="DATE",
        help="YYYY-MM-DD (the key stops working at the start of that day, UTC) or an ISO date-time",
    )
    create.add_argument(
        "--rate",
        type=float,
        help="requests per second for this key (0: none; default: FACEBRIDGE_KEY_RATE_PER_S)",
    )
    create.add_argument(
        "--burst",
        type=float,
        help="requests at once above the rate (default: FACEBRIDGE_KEY_BURST, or the rate)",
    )
    create.add_argument(
        "--concurrency",
        type=int,
        help="requests in flight for this key (0: none; default: FACEBRIDGE_KEY_MAX_CONCURRENT)",
    )
    create.set_defaults(func=cmd_create)

    listing = commands.add_parser(
        "list", help="the keys: id, name, scopes, expiry, state, limits (never a hash or a key)"
    )
    listing.add_argument("--file", help=FILE_HELP)
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    listing.set_defaults(func=cmd_list)

    revoke = commands.add_parser("revoke", help="mark a key revoked: it is refused with 401 from then on")
    revoke.add_argument("--file", help=FILE_HELP)
    _which(revoke)
    revoke.set_defaults(func=cmd_revoke)

    rotate = commands.add_parser(
        "rotate", help="give a key a new secret (same id, name, scopes, limits); prints the new key last"
    )
    rotate.add_argument("--file", help=FILE_HELP)
    _which(rotate)
    rotate.set_defaults(func=cmd_rotate)
