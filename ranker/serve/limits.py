"""Limits enforced on connections and on a request's arrival, before any route runs: uvicorn's h11 protocol,
guarded (:class:`GuardedProtocol`).

- **Headers**: a connection whose request line and headers do not all arrive within the header timeout (of opening,
  or of its previous answer) is closed. Headers over h11's size limit are answered 431, a malformed request 400.
- **Body**: read whole before the app sees the request (:class:`BodyLimits`): a ``Content-Length`` over the limit is
  answered 413 at once; a body that grows past it while it streams, or holds more JSON values than the limit
  (counted as it arrives: :class:`ranker.serve.errors.JsonValues`), 413; one that stalls longer than the read
  timeout, arrives slower than the minimum rate once :data:`BODY_GRACE_S` have passed, or is not all in within the
  body timeout, 408. A client that hangs up meanwhile is counted as a closed request (499), not a server error. This
  phase costs a connection few steps of the event loop, so clients that trickle bodies and reconnect cost little.
- **Connections**: when a request arrives with more than ``max_connections`` open, it makes room by closing the
  connection that has waited longest (over :data:`EVICT_AFTER_S`) without a request at work: a silent or idle one,
  or one still sending its body; only when none can be closed is it answered 503 with ``Retry-After``.
- **Shutdown**: an idle kept-alive connection stays open a moment (``shutdown_grace_s``) so that a request already
  on its way is answered, with ``Connection: close``, instead of meeting a closed connection.

Every answer given here is in the one error shape, carries a request id and is counted in the app's metrics; after
h11's refusals, what the client still sends is read and dropped for :data:`LINGER_S` before closing, so that the
answer is read rather than lost to a reset. :func:`server_options` gives uvicorn the protocol.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

import h11
from fastapi import FastAPI
from uvicorn.protocols.http.flow_control import CLOSE_HEADER
from uvicorn.protocols.http.h11_impl import H11Protocol

from ranker.serve.config import ServeConfig
from ranker.serve.errors import ApiError, JsonValues, request_id_of
from ranker.serve.metrics import Metrics

BODY_GRACE_S = 5.0
"""Seconds a body may take before the minimum rate applies."""
EVICT_AFTER_S = 1.0
"""A connection waiting less than this long is never closed to make room."""
LINGER_S = 2.0
"""How long a connection answered with h11's refusal is read and dropped before it is closed."""


class ClientGone(Exception):
    """The client hung up before its request's body was all in."""


class BodyLimits:
    """At most ``max_bytes`` of body holding at most ``max_values`` JSON values (:class:`JsonValues`), each part
    within ``read_timeout_s`` of the last, all of it within ``body_timeout_s``, at ``min_rate`` bytes a second or more
    once :data:`BODY_GRACE_S` have passed (``0``: no minimum)."""

    def __init__(self, max_bytes: int, max_values: int, read_timeout_s: float, body_timeout_s: float,
                 min_rate: int):
        self.max_bytes, self.max_values, self.read_timeout_s = max_bytes, max_values, read_timeout_s
        self.body_timeout_s, self.min_rate = body_timeout_s, min_rate

    async def read(self, scope: dict, receive: Any) -> bytes:
        """The whole body.

        Raises:
            ApiError: 413 or 408, with ``Connection: close`` (the rest of the body would hold the connection).
            ClientGone: The client hung up.
        """
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(int(declared))
        parts, received, started, values = [], 0, time.monotonic(), JsonValues(self.max_values)
        while True:
            error, wait = self._deadline(started, received, time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), max(0.0, wait))
            except TimeoutError:
                raise error from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            parts.append(message.get("body", b""))
            received += len(parts[-1])
            if received > self.max_bytes:
                raise self._too_large(received)
            values.feed(parts[-1])
            if values.over:
                raise _unread(413, f"holds {values.values:,} or more JSON values (arrays, objects, keys, elements), "
                                   f"over the limit of {self.max_values:,}")
            if not message.get("more_body", False):
                return b"".join(parts)

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
    return ApiError(status, "body", reason, {"Connection": "close"})


def _error_bytes(error: ApiError, request_id: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The one error shape as a body and its headers (the connection closes after it)."""
    body = json.dumps(error.body(request_id)).encode()
    extra = {"connection": "close", **{k.lower(): v for k, v in error.headers.items()}, "x-request-id": request_id}
    return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                  *((k.encode(), v.encode()) for k, v in extra.items())]


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, the body read under :class:`BodyLimits` before the app runs,
    connections that idle clients cannot hold, h11's refusals in the one error shape, and a grace on shutdown (see
    the module docstring). ``routes``: the app's route paths, to label what is counted here."""

    def __init__(self, *args: Any, header_timeout_s: float, max_connections: int, shutdown_grace_s: float,
                 body: BodyLimits, metrics: Metrics | None, routes: frozenset[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.header_timeout_s, self.max_connections = header_timeout_s, max_connections
        self.shutdown_grace_s, self.body, self.metrics, self.routes = shutdown_grace_s, body, metrics, routes
        self.waiting_since = time.monotonic()
        """When this connection last began waiting for a request (opened, or answered its last)."""
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_after: object = None  # the request cycle before the one whose headers are awaited
        self._app, self._refused, self._draining, self._evicted = self.app, False, False, False
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

    # a request's arrival
    async def _admit(self, scope: dict, receive: Any, send: Any) -> None:
        """Room for the request (503 when none can be made), then its whole body (408, 413, or a client gone),
        then the app, given the body in one message."""
        if len(self.connections) > self.max_connections and not self._make_room():
            return await self._answer(scope, send, ApiError(
                503, "connection", f"all {self.max_connections} connections are at work: retry shortly",
                {"Retry-After": "1"}))
        try:
            body = await self.body.read(scope, receive)
        except ApiError as e:
            return await self._answer(scope, send, e)
        except ClientGone:
            if self._evicted:
                self._count(scope, "408")
            elif self.metrics is not None:
                self.metrics.client_closed.labels(self._route(scope)).inc()
            return
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)

    async def _answer(self, scope: dict, send: Any, error: ApiError) -> None:
        """``error`` in the one shape; when the body was not all read, what the client still sends is dropped for a
        moment before the connection closes (closed at once, the client would meet a reset, not the answer)."""
        request_id = request_id_of(dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1"))
        body, headers = _error_bytes(error, request_id)
        self._count(scope, str(error.status))
        if self.cycle is not None and self.cycle.more_body:
            self.cycle.transport = _Lingering(self)
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _route(self, scope: dict) -> str:
        return scope["path"] if scope["path"] in self.routes else "unmatched"

    def _count(self, scope: dict | None, status: str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels(self._route(scope) if scope else "unmatched", status).inc()

    def _linger(self) -> None:
        """Drop what arrives from now on and close in :data:`LINGER_S`."""
        if not self._refused:
            self._refused = True
            self._disarm()
            self.loop.call_later(LINGER_S, self._close)

    # connections
    def _evictable(self, now: float) -> bool:
        """Whether this connection waits for a request or its body (no work of the server's under way) and has
        waited long enough to be closed for room."""
        cycle = self.cycle
        waiting = cycle is None or cycle.response_complete or (cycle.more_body and not cycle.response_started)
        return waiting and now - self.waiting_since > EVICT_AFTER_S and not self.transport.is_closing()

    def _make_room(self) -> bool:
        """Close the connection (not this one) that has waited longest without work under way; whether one was."""
        now = time.monotonic()
        candidates = [c for c in self.connections if c is not self and isinstance(c, GuardedProtocol)
                      and c._evictable(now)]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda c: c.waiting_since)
        oldest._evicted = True
        oldest.transport.close()
        oldest.connections.discard(oldest)  # its room is free now, not when the loop gets to the close
        if self.metrics is not None:
            self.metrics.evicted.inc()
        return True

    # h11's refusals
    def send_400_response(self, msg: str) -> None:
        """h11 refused the request (malformed, or headers over its limit): the one error shape, then a linger."""
        limit = self.conn._max_incomplete_event_size  # h11's own bound on a request line and headers
        too_large = len(self.conn.trailing_data[0]) > limit
        error = (ApiError(431, "headers", f"request line and headers over {limit:,} bytes") if too_large
                 else ApiError(400, "request", "not a valid HTTP/1.1 request"))
        body, headers = _error_bytes(error, request_id_of(None))
        self._count(None, str(error.status))
        for event in (h11.Response(status_code=error.status, headers=headers), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self._linger()

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


class _Lingering:
    """A connection's transport whose ``close`` lingers (:meth:`GuardedProtocol._linger`) instead."""

    def __init__(self, protocol: GuardedProtocol):
        self.protocol, self.transport = protocol, protocol.transport

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.protocol._linger()


def server_options(config: ServeConfig, app: FastAPI | None = None) -> dict[str, Any]:
    """uvicorn settings for ``config``: the guarded protocol (what it answers counted in ``app``'s metrics) and the
    keep-alive timeout."""
    metrics = getattr(app.state, "metrics", None) if app is not None else None
    routes = frozenset(getattr(r, "path", "") for r in app.routes) if app is not None else frozenset()
    body = BodyLimits(config.max_body_bytes, config.json_values, config.read_timeout_s, config.body_timeout_s,
                      config.min_body_rate)
    return {"http": functools.partial(GuardedProtocol, header_timeout_s=config.header_timeout_s,
                                      max_connections=config.max_connections,
                                      shutdown_grace_s=min(1.0, config.keep_alive_s), body=body, metrics=metrics,
                                      routes=routes),
            "timeout_keep_alive": config.keep_alive_s}
