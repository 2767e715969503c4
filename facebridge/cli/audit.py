"""`facebridge audit`: read the audit trail (the JSON-lines file, or the pair store's audit_log table).

    facebridge audit                                   # FACEBRIDGE_AUDIT_LOG (default .facebridge/audit.log)
    facebridge audit --since 7d --action pairs.erase
    facebridge audit --db 'postgresql://app@db/identity' --action auth --json

See facebridge/audit.py for what is recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_audit(args: argparse.Namespace) -> int:
    from facebridge.audit import as_text, parse_since, read_database, read_file
    from facebridge.keyfile import KeyFileError

    try:
        since = parse_since(args.since) if args.since else None
    except KeyFileError as exc:
        print(f"error: {exc} (or 30m, 12h, 7d, 2w)", file=sys.stderr)
        return 2
    if args.db:
        from facebridge.pairs.migrations import PairStoreError

        try:
            records = read_database(args.db, since, args.action, args.key)
        except PairStoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        path = args.file
        if path is None:
            from facebridge.config import Settings

            path = Settings().audit_log_path
        if not path.is_file():
            print(f"error: no audit log at {path} (FACEBRIDGE_AUDIT_LOG, or --file / --db)", file=sys.stderr)
            return 2
        records = list(read_file(path, since, args.action, args.key))
    if args.json:
        for record in records:
            moment = record["time"]
            if not isinstance(moment, str):
                record = {**record, "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
            print(json.dumps(record, ensure_ascii=False))
        return 0
    for line in as_text(records):
        print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    audit = sub.add_parser(
        "audit",
        help="read the audit trail: erasures, pair recordings, reloads, refused requests",
        description=__doc__.split("\n\n")[0],
    )
    source = audit.add_mutually_exclusive_group()
    source.add_argument(
        "--file", type=Path, help="the JSON-lines audit log (default: FACEBRIDGE_AUDIT_LOG's)"
    )
    source.add_argument(
        "--db",
        metavar="URL",
        help="read the pair store's audit_log table instead: a SQLite file or a postgresql:// DSN",
    )
    audit.add_argument(
        "--since", help="only records from then on: 30m, 12h, 7d, 2w ago, or an ISO date / date-time (UTC)"
    )
    audit.add_argument(
        "--action",
        help="only this action, or those it prefixes at a dot (pairs: pairs.erase and pairs.record; auth: "
        "refused requests)",
    )
    audit.add_argument("--key", metavar="ID", help="only records of this key id")
    audit.add_argument("--json", action="store_true", help="one JSON object per line, as stored")
    audit.set_defaults(func=cmd_audit)
