"""Request bodies read once into one buffer, with the size limit checked before the first byte."""

from __future__ import annotations

from fastapi import Request

from facebridge.npy import uninitialised
from facebridge.service.errors import Problem


async def read_body(request: Request, limit: int, binary: bool = False) -> bytes | bytearray | memoryview:
    """The request body, read into one preallocated buffer when its length is declared (`binary`: a
    buffer that is not zero-filled first, as a memoryview; else a bytearray, which JSON parsers take)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        body = await request.body()
        if len(body) > limit:
            raise _too_large(len(body), limit)
        return body
    size = int(declared)
    if size > limit:
        raise _too_large(size, limit)
    buffer: bytearray | memoryview = uninitialised(size) if binary else bytearray(size)
    view = memoryview(buffer)
    position = 0
    async for chunk in request.stream():
        end = position + len(chunk)
        if end > size:
            raise Problem.of(
                "bad-content-length", f"more than {size} bytes sent", title="Body longer than declared"
            )
        view[position:end] = chunk
        position = end
    if position != size:
        raise Problem.of(
            "bad-content-length", f"{position} of {size} bytes", title="Body shorter than declared"
        )
    return buffer


def _too_large(size: int, limit: int) -> Problem:
    return Problem.of(
        "request-too-large", f"{size} bytes; the limit is {limit}", title="Request body too large"
    )
