"""`facebridge serve`: run the HTTP service."""

from __future__ import annotations

import argparse

from facebridge.cli.common import needs_onnxruntime


@needs_onnxruntime
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from facebridge.config import Settings

    settings = Settings()
    uvicorn.run(
        "facebridge.service.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.workers,
        log_level=settings.log_level,
        access_log=False,  # the service logs each request itself, with its request id
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    serve = sub.add_parser("serve", help="run the HTTP service (settings from FACEBRIDGE_* variables)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="default FACEBRIDGE_WORKERS or 1")
    serve.set_defaults(func=cmd_serve)
