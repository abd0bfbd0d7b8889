"""Limits enforced while a request arrives, before any route runs: the body's size (by ``Content-Length`` and
while it streams in) and how long each part of the body may take to arrive.

A pure ASGI middleware: a ``Content-Length`` over the limit is answered 413 at once, without reading the body; a
body that grows past the limit while it streams, or stalls longer than the read timeout, fails the route's read
with an :class:`ApiError` (413, 408), answered in the one error shape. Nothing larger than the limit is buffered.

Before a request exists, :class:`HeaderTimeoutProtocol` closes a connection whose request line and headers do not
all arrive within the header timeout (a client that opens connections and sends nothing, or headers a byte at a
time); :func:`server_options` gives uvicorn that protocol, the keep-alive timeout and the connection limit.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ranker.serve.config import ServeConfig
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


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose next request's headers have not all arrived within
    ``header_timeout_s`` of the connection opening or of the previous response."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_after: object = None  # the request cycle before the one whose headers are awaited

    def _arm(self) -> None:
        self._disarm()
        self._waiting_after = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waiting_after:  # a new request's headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def server_options(config: ServeConfig) -> dict[str, Any]:
    """uvicorn settings for ``config``: the header-timeout protocol, keep-alive timeout, connection limit."""
    return {"http": functools.partial(HeaderTimeoutProtocol, header_timeout_s=config.header_timeout_s),
            "timeout_keep_alive": config.keep_alive_s, "limit_concurrency": config.max_connections}
