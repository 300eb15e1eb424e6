"""ASGI middleware in front of the router's FastAPI app: body size limit and in-flight count.

The limit is enforced before anything parses the body: a declared Content-Length over the limit is
refused at once, and a body sent without one (chunked) is counted while it is read and refused as soon
as it passes the limit, so an oversized body is never buffered whole or handed to the JSON parser.
The body that passes is replayed to the app unchanged.

The in-flight count is how the router decides whether to batch: a request that is alone in the replica
is scored at once, because waiting `wait_ms` for company that is not coming only adds latency.

The fast lane (`FastLane`, given by `ferry.serving.api`) sees each body that passed the limit first: it
answers a clean scoring request itself, skipping FastAPI's routing, dependency solving and response
re-validation (half of a single request's time in the replica, measured), and hands anything else,
an invalid body included, to the app, which answers exactly as it would without the lane.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ferry.contract.errors import FerryError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
FastLane = Callable[[Scope, bytes], Awaitable[ASGIApp | None]]  # the response to send, or None: the app decides


class TooLarge(FerryError):
    """A request body over `max_body_bytes` (answered 413); the message is the size seen."""


class InFlight:
    """HTTP requests inside the replica right now (shared with the scorer, which cannot see the middleware)."""

    def __init__(self) -> None:
        self.count = 0


class Intake:
    def __init__(self, app: ASGIApp, max_body_bytes: int, in_flight: InFlight | None = None,
                 on_reject: Callable[[int], None] | None = None, fast_lane: FastLane | None = None) -> None:
        self.app = app
        self.fast_lane = fast_lane
        self.max_body_bytes = max_body_bytes
        self.on_reject = on_reject
        self.in_flight = in_flight or InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight.count += 1
        try:
            await self._handle(scope, receive, send)
        finally:
            self.in_flight.count -= 1

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared == -1:
            if self.on_reject:
                self.on_reject(400)
            await _reply(send, 400, "the Content-Length header is not a number", close=True)
            return
        if declared is not None and declared > self.max_body_bytes:
            await self._reject(send, declared)
            return
        try:
            body, more = await _read_body(receive, self.max_body_bytes)
        except TooLarge as exc:
            await self._reject(send, int(str(exc)))
            return
        if more is None:  # the client went away before sending its body
            return
        if self.fast_lane is not None and scope.get("method") == "POST":
            response = await self.fast_lane(scope, body)
            if response is not None:
                await response(scope, _replay(body, receive), send)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _reject(self, send: Send, size: int) -> None:
        if self.on_reject:
            self.on_reject(413)
        await _reply(send, 413, f"request body of {size} bytes or more is over the limit of "
                                f"{self.max_body_bytes} bytes (serving.limits.max_body_bytes)", close=True)


def _content_length(scope: Scope) -> int | None:
    """The declared length, None when absent, -1 when malformed."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else -1
    return None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool | None]:
    """The whole body (at most `limit` bytes); raises TooLarge with the size seen when it is more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(str(size))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replay


async def _reply(send: Send, status: int, message: str, close: bool = False) -> None:
    """`close`: answered before the body was read (or with a length that cannot be trusted), so the rest of the
    body is still on the connection. The server then closes it, and `Connection: close` tells the client so
    before it sends its next request there: without it, a client that reuses the connection races the close
    and gets no answer at all (seen after a chunked 413: 2 in 150 next requests)."""
    payload = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"connection", b"close")] if close else headers})
    await send({"type": "http.response.body", "body": payload})
