"""The `facebridge` command: serve, manage models, embed datasets, evaluate, fit, migrate, doctor, keys.

Each command lives in its own module with a `register(subparsers)`; modules import the vision stack
(OpenCV, onnxruntime) only inside the commands that need it, so `facebridge --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from facebridge.cli import (
    audit,
    calibrate,
    cohort,
    doctor,
    embed,
    evaluate,
    fit,
    keys,
    migrate,
    models,
    refit,
    serve,
    studies,
)

COMMANDS = (
    serve,
    models,
    doctor,
    embed,
    evaluate,
    studies,
    migrate,
    fit,
    refit,
    calibrate,
    cohort,
    keys,
    audit,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facebridge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", "-v", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
