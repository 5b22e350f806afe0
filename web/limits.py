"""Web limits: request size, bounded concurrency, rate limits and CORS, all from settings."""

from __future__ import annotations

import asyncio
import json
import math
import time

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.settings import Settings

# The routes that run the model: the only ones queued and rate limited (GET / answers a
# shared link, /?q=…).
ANSWERING_ROUTES = {
    ("POST", "/api/answer"),
    ("POST", "/chat/api/answer"),
    ("POST", "/"),
    ("GET", "/"),
}
_MAX_TRACKED_CLIENTS = 10_000


def install(app: FastAPI, settings: Settings) -> None:
    """Add the limiting middleware to ``app`` (safe defaults come from ``Settings``).

    Outermost first: CORS (only when ``cors_origins`` is set), the per-client
    rate limit, the body size limit, then the bounded queue in front of the
    answering routes. Every refusal is a JSON ``{"detail": ...}``.
    """
    # add_middleware puts each new layer outside the previous ones.
    app.add_middleware(AnswerQueue, settings=settings)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.rate_limit_per_minute:
        app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization"],
        )


async def refuse(send: Send, status: int, detail: str, retry_after: float | None = None) -> None:
    """Send a complete JSON error response ``{"detail": detail}``."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if retry_after is not None:
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(retry_after))))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _is_answering(scope: Scope) -> bool:
    return scope["type"] == "http" and (scope["method"], scope["path"]) in ANSWERING_ROUTES


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for a body over ``max_bytes``, by its Content-Length or as soon as the stream passes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        detail = f"the request body is larger than {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await refuse(send, 413, detail)
        received, too_large, started = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                too_large = True
                raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # the app's reply to the cut-off body is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await refuse(send, 413, detail)


class RateLimit:
    """429 once a client address has asked more than ``per_minute`` questions (token bucket)."""

    def __init__(self, app: ASGIApp, per_minute: int) -> None:
        self.app, self.per_minute = app, per_minute
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last update)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_answering(scope):
            return await self.app(scope, receive, send)
        client = scope["client"][0] if scope.get("client") else "unknown"
        now, refill = time.monotonic(), self.per_minute / 60
        tokens, last = self.buckets.get(client, (self.per_minute, now))
        tokens = min(self.per_minute, tokens + (now - last) * refill)
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            wait = (1 - tokens) / refill
            detail = f"more than {self.per_minute} questions a minute; try again in {wait:.0f} s"
            return await refuse(send, 429, detail, retry_after=wait)
        if len(self.buckets) >= _MAX_TRACKED_CLIENTS:
            # Forget clients whose bucket has refilled: they are back to a full allowance anyway.
            full = [c for c, (t, at) in self.buckets.items() if t + (now - at) * refill >= 1]
            for idle in full[: len(full) // 2 or 1]:
                del self.buckets[idle]
        self.buckets[client] = (tokens - 1, now)
        await self.app(scope, receive, send)


class AnswerQueue:
    """At most ``max_concurrency`` answers in progress and ``max_queue`` waiting; 503 beyond.

    A request that waits longer than ``queue_timeout_seconds`` for a slot also
    gets a 503 with Retry-After: a quick, deliberate refusal is better for a
    client than a reply that arrives after it has given up.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_queue = settings.max_queue
        self.timeout = settings.queue_timeout_seconds
        self.slots = asyncio.Semaphore(settings.max_concurrency)
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_answering(scope):
            return await self.app(scope, receive, send)
        retry_after = max(1.0, self.timeout)
        if self.slots.locked() and self.waiting >= self.max_queue:
            return await refuse(send, 503, "the server is busy; try again shortly", retry_after)
        self.waiting += 1
        try:
            async with asyncio.timeout(self.timeout):
                await self.slots.acquire()
        except TimeoutError:
            return await refuse(send, 503, "the server is busy; try again shortly", retry_after)
        finally:
            self.waiting -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()
