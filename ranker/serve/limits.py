"""Limits enforced on connections and while a request arrives, before any route runs.

:class:`BodyLimits`, a pure ASGI middleware, bounds the body: a ``Content-Length`` over the limit is answered 413 at
once, without reading the body; a body that grows past the limit while it streams fails the route's read with
413; one that stalls longer than the read timeout, arrives slower than the minimum rate, or is not all in within the
body timeout fails it with 408 (:class:`ApiError`, answered in the one error shape). Nothing larger than the limit
is buffered.

:class:`GuardedProtocol`, uvicorn's h11 protocol with four changes, guards the connections:

- A connection whose request line and headers do not all arrive within the header timeout (of opening, or of its
  previous answer) is closed.
- Connection slots: when every slot is taken, a new request makes room by closing the connection that has waited
  longest (over a second) without a request in progress: an idle or silent one, or one still sending its body;
  only when none can be closed is it answered 503 with ``Retry-After``, in the one error shape. So slow or silent
  clients cannot hold the slots that working clients need.
- h11's own refusals (a malformed request: 400; headers over its size limit: 431) are answered in the one error
  shape, and what the client still sends is read and dropped for a moment before closing, so that the answer is
  read rather than lost to a reset.
- On shutdown, an idle kept-alive connection stays open a moment (``shutdown_grace_s``) so that a request already on
  its way is answered (with ``Connection: close``) instead of meeting a closed connection.

:func:`server_options` gives uvicorn that protocol and the keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import CLOSE_HEADER
from uvicorn.protocols.http.h11_impl import H11Protocol

from ranker.serve.config import ServeConfig
from ranker.serve.errors import ApiError
from ranker.serve.metrics import Metrics

BODY_GRACE_S = 2.0
"""Seconds a body may take before the minimum rate applies."""
EVICT_AFTER_S = 1.0
"""A connection waiting less than this long is never closed to make room."""
LINGER_S = 2.0
"""How long a connection answered with h11's refusal is read and dropped before it is closed."""


class BodyLimits:
    """ASGI middleware: at most ``max_bytes`` of body, each chunk within ``read_timeout_s`` of the last, all of it
    within ``body_timeout_s``, at ``min_rate`` bytes a second or more once :data:`BODY_GRACE_S` have passed
    (``0``: no minimum)."""

    def __init__(self, app: Any, max_bytes: int, read_timeout_s: float, body_timeout_s: float, min_rate: int):
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s
        self.body_timeout_s, self.min_rate = body_timeout_s, min_rate

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await refuse(send, self._too_large(int(declared)), scope.get("state", {}).get("request_id"))
        received, started = 0, None

        async def limited() -> dict:
            nonlocal received, started
            now = time.monotonic()
            started = started or now
            error, wait = self._deadline(started, received, now)
            try:
                message = await asyncio.wait_for(receive(), max(0.0, wait))
            except TimeoutError:
                raise error from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(received)
            return message

        await self.app(scope, limited, send)

    def _deadline(self, started: float, received: int, now: float) -> tuple[ApiError, float]:
        """The error a read that times out gets, and how long the next read may wait."""
        waits = [(self.read_timeout_s, _unread(408, f"no part of the body arrived within {self.read_timeout_s} s")),
                 (started + self.body_timeout_s - now,
                  _unread(408, f"the body did not all arrive within {self.body_timeout_s} s"))]
        if self.min_rate:
            waits.append((started + BODY_GRACE_S + received / self.min_rate - now,
                          _unread(408, f"the body arrived slower than {self.min_rate:,} bytes a second")))
        wait, error = min(waits, key=lambda w: w[0])
        return error, wait

    def _too_large(self, size: int) -> ApiError:
        return _unread(413, f"{size:,} bytes or more, over the limit of {self.max_bytes:,} bytes")


def _unread(status: int, reason: str) -> ApiError:
    """An error answered before the body was all read: the connection closes after it (the rest of the body would
    otherwise hold it)."""
    return ApiError(status, "body", reason, {"Connection": "close"})


def error_bytes(error: ApiError, request_id: str | None) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The one error shape as a body and its headers (the connection closes after it)."""
    body = json.dumps(error.body(request_id)).encode()
    extra = {"connection": "close", **{k.lower(): v for k, v in error.headers.items()}}
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((k.encode(), v.encode()) for k, v in extra.items())]
    return body, headers


async def refuse(send: Any, error: ApiError, request_id: str | None) -> None:
    """Answer ``error`` from ASGI middleware, before any route."""
    body, headers = error_bytes(error, request_id)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Slots:
    """A server's request slots, shared by its connections: how many there are and how many are serving."""

    def __init__(self, count: int):
        self.count, self.serving = count, 0


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, connection slots that idle clients cannot hold, h11's refusals
    in the one error shape, and a grace on shutdown (see the module docstring)."""

    def __init__(self, *args: Any, header_timeout_s: float, slots: Slots, shutdown_grace_s: float,
                 metrics: Metrics | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.header_timeout_s, self.slots = header_timeout_s, slots
        self.shutdown_grace_s, self.metrics = shutdown_grace_s, metrics
        self.waiting_since = time.monotonic()
        """When this connection last began waiting for a request (opened, or answered its last)."""
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_after: object = None  # the request cycle before the one whose headers are awaited
        self._app, self._refused, self._draining = self.app, False, False
        self.app = self._admit

    # the header timeout
    def _arm(self) -> None:
        self._disarm()
        self._waiting_after = self.cycle
        self.waiting_since = time.monotonic()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._close)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > self.slots.count:  # open connections stay about the slots' number
            self._make_room()

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered h11's refusal: drop what still comes until the linger ends
            return
        super().data_received(data)
        if self.cycle is not self._waiting_after:  # a new request's headers are in
            self._disarm()
            if self._draining and self.cycle.keep_alive:  # answered with Connection: close, then closed
                self.cycle.keep_alive = False
                self.scope["headers"].append(CLOSE_HEADER)  # uvicorn echoes a request's close in the response

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # connection slots
    def _evictable(self, now: float, in_request: bool) -> bool:
        """Whether this connection waits for a request or (``in_request``: only) for its body, with no work of the
        server's under way, and has waited long enough to be closed for room."""
        cycle = self.cycle
        sending_body = cycle is not None and cycle.more_body and not cycle.response_started
        waiting = sending_body or (not in_request and (cycle is None or cycle.response_complete))
        return waiting and now - self.waiting_since > EVICT_AFTER_S and not self.transport.is_closing()

    def _make_room(self, in_request: bool = False) -> bool:
        """Close the connection (not this one) that has waited longest without work under way (``in_request``: one
        holding a request slot while its body trickles in); whether one was."""
        now = time.monotonic()
        candidates = [c for c in self.connections if c is not self and isinstance(c, GuardedProtocol)
                      and c._evictable(now, in_request)]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda c: c.waiting_since)
        if oldest.cycle is not None and not oldest.cycle.response_complete:  # its route counts it as evicted
            oldest.scope.setdefault("state", {})["evicted"] = True
        oldest.transport.close()
        oldest.connections.discard(oldest)  # its slot is free now, not when the loop gets to the close
        if self.metrics is not None:
            self.metrics.evicted.inc()
        return True

    async def _admit(self, scope: dict, receive: Any, send: Any) -> None:
        """The app for a request that has a slot (one is made if need be), else the 503 of :meth:`_busy`."""
        slots = self.slots
        if slots.serving >= slots.count and not self._make_room(in_request=True):
            return await self._busy(send)
        slots.serving += 1
        try:
            await self._app(scope, receive, send)
        finally:
            slots.serving -= 1

    async def _busy(self, send: Any) -> None:
        """The answer when every slot does work: 503 with ``Retry-After``, in the one error shape."""
        error = ApiError(503, "connection", f"all {self.slots.count} connection slots are serving requests: "
                                            "retry shortly", {"Retry-After": "1"})
        request_id = uuid.uuid4().hex
        body, headers = error_bytes(error, request_id)
        self._count("503")
        await send({"type": "http.response.start", "status": 503,
                    "headers": [*headers, (b"x-request-id", request_id.encode())]})
        await send({"type": "http.response.body", "body": body})

    def _count(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels("unmatched", status).inc()

    # h11's refusals
    def send_400_response(self, msg: str) -> None:
        """h11 refused the request (malformed, or headers over its limit): the one error shape, then a linger."""
        buffered, _ = self.conn.trailing_data
        too_large = len(buffered) > self.conn._max_incomplete_event_size
        status, field = (431, "headers") if too_large else (400, "request")
        reason = (f"request line and headers over {self.conn._max_incomplete_event_size:,} bytes" if too_large
                  else "not a valid HTTP/1.1 request")
        request_id = uuid.uuid4().hex
        body, headers = error_bytes(ApiError(status, field, reason), request_id)
        self._count(str(status))
        for event in (h11.Response(status_code=status, headers=[*headers, (b"x-request-id", request_id.encode())]),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self._refused = True
        self._disarm()
        self.loop.call_later(LINGER_S, self._close)

    # shutdown
    def shutdown(self) -> None:
        """Graceful shutdown: a request in progress finishes and closes; an idle connection closes after
        ``shutdown_grace_s``, or after answering a request that arrives before."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            self._disarm()
            self.loop.call_later(self.shutdown_grace_s, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._close()


def server_options(config: ServeConfig, metrics: Metrics | None = None) -> dict[str, Any]:
    """uvicorn settings for ``config``: the guarded protocol (its evictions and refusals counted in ``metrics``)
    and the keep-alive timeout."""
    return {"http": functools.partial(GuardedProtocol, header_timeout_s=config.header_timeout_s,
                                      slots=Slots(config.max_connections),
                                      shutdown_grace_s=min(1.0, config.keep_alive_s), metrics=metrics),
            "timeout_keep_alive": config.keep_alive_s}
