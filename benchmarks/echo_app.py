"""A bare FastAPI app that echoes its body: the floor any endpoint is compared with.

`/echo` parses a JSON body and returns it (FastAPI's default JSON handling); `/echo-npy` returns the
raw bytes of a binary body (e.g. a .npy array) as FastAPI serves them without any care: the body
read with `request.body()`, sent back in one piece.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/echo")
async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@app.post("/echo-npy")
async def echo_npy(request: Request) -> Response:
    return Response(await request.body(), media_type=request.headers.get("content-type"))
