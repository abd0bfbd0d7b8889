"""Limits enforced while a request arrives, before any route runs: the body's size (by ``Content-Length`` and
while it streams in) and how long each part of the body may take to arrive.

A pure ASGI middleware: a ``Content-Length`` over the limit is answered 413 at once, without reading the body; a
body that grows past the limit while it streams, or stalls longer than the read timeout, fails the route's read
with an :class:`ApiError` (413, 408), answered in the one error shape. Nothing larger than the limit is buffered.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ranker.serve.errors import ApiError


class BodyLimits:
    """ASGI middleware: at most ``max_bytes`` of body, each chunk within ``read_timeout_s`` of the last."""

    def __init__(self, app: Any, max_bytes: int, read_timeout_s: float):
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _refuse(send, self._too_large(int(declared)))
        received = 0

        async def limited() -> dict:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except TimeoutError:
                raise ApiError(408, "body", f"no part of the body arrived within {self.read_timeout_s} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(received)
            return message

        await self.app(scope, limited, send)

    def _too_large(self, size: int) -> ApiError:
        return ApiError(413, "body", f"{size:,} bytes or more, over the limit of {self.max_bytes:,} bytes")


async def _refuse(send: Any, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
