"""Bounds on what a request may make the detector hold: its body counted in bytes WHILE it is read (so a
chunked body without Content-Length is cut off at the cap as surely as a declared one), a budget of body
bytes read at once across all requests, and the shape of a JSON body checked before it is parsed.

Starlette reads a body whole (`Request.body()`), whatever its size, and has no global budget; uvicorn
bounds only the header section (`h11_max_incomplete_event_size`). Hence these few lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import ClientDisconnect, Request

from churn_core.jsonshape import json_shape, values_at_most


class Refusal(Exception):  # noqa: N818 - a refusal is not an error of ours: the client gets its 4xx/503
    """A request refused for what it is: `status` and stable `code` go into the one error body."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def too_large(what: str, limit: int) -> Refusal:
    return Refusal(413, "payload_too_large", f"{what} is larger than {limit} bytes; send smaller bodies")


def declared_length(request: Request) -> int | None:
    """Content-Length as a number (uvicorn has already refused a malformed one), None when chunked."""
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes, declared or not."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise too_large(f"{what} of {declared} bytes", limit)
    parts: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(what, limit)
            parts.append(chunk)
    except ClientDisconnect as error:
        raise Refusal(400, "client_disconnected", f"the client went away during the {what}") from error
    return b"".join(parts)


def check_json_shape(body: bytes, *, max_depth: int, max_values: int, what: str) -> None:
    """400 for nesting deeper than `max_depth`, 413 for more than `max_values` values: before parsing."""
    if body.count(b"[") + body.count(b"{") <= max_depth and values_at_most(body) <= max_values:
        return  # bounds of both, counting brackets inside strings too: no scan needed (most events)
    shape = json_shape(body)
    if shape.depth > max_depth:
        raise Refusal(400, "json_too_deep", f"{what} nests {shape.depth} levels deep; at most {max_depth}")
    if shape.values > max_values:
        raise Refusal(
            413, "json_too_many_values", f"{what} holds {shape.values} JSON values; at most {max_values}"
        )


class ByteBudget:
    """Bytes of request bodies held at once, across requests: a request reserves its size before reading
    (its Content-Length, else the route's cap) and waits while the budget is spent; after `wait_seconds`
    it is refused with 503 and Retry-After. A request larger than the whole budget still runs, alone.

    Waiting holds no body in memory (the bytes stay in the kernel's socket buffers and TCP pushes back
    on the sender), so a burst of large events is read one budget at a time instead of all at once.
    """

    def __init__(self, total: int, wait_seconds: float) -> None:
        self.total = total
        self.wait_seconds = wait_seconds
        self.used = 0
        self._waiting = 0
        self._changed = asyncio.Condition()

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.total

    @asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        # The check and the increment run on the event loop without an await in between: no lock is
        # needed when the budget has room (every event but a burst's), only to wait for room.
        if not self._fits(size):
            await self._wait_for_room(size)
        self.used += size
        try:
            yield
        finally:
            self.used -= size
            if self._waiting:
                async with self._changed:
                    self._changed.notify_all()

    async def _wait_for_room(self, size: int) -> None:
        self._waiting += 1
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._fits(size)), self.wait_seconds)
        except TimeoutError as error:
            raise Refusal(
                503,
                "detector_busy",
                f"{self.used} bytes of bodies are being read; try again shortly",
                retry_after=max(1, round(self.wait_seconds)),
            ) from error
        finally:
            self._waiting -= 1
