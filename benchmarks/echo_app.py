"""A bare FastAPI app whose endpoint echoes its JSON body: the floor any JSON endpoint is compared with."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.post("/echo")
async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload
