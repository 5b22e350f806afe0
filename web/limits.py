"""Web limits: hosts, request size and time, concurrency, rate limits and CORS, from settings."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC, datetime, timedelta

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.settings import Settings

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before 0.160 lists an included router's routes in `app.routes`

    def iter_route_contexts(routes: list[BaseRoute]) -> list[BaseRoute]:  # type: ignore[misc]
        return routes


_MAX_TRACKED_CLIENTS = 10_000


class Mark:
    """A mark a route carries among its dependencies, naming the limits it is under.

    Declared with the route (``dependencies=[ANSWERING]``) or with its router,
    so a route cannot be added without its limits. The middleware reads the
    marks of every route once, when it first serves a request; as a dependency
    a mark checks nothing.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Mark({self.name!r})"

    async def __call__(self) -> None:
        return None


ANSWERING_MARK, FEEDBACK_MARK, CHAT_MARK = Mark("answering"), Mark("feedback"), Mark("chat")
# Runs the model: queued, and counted as questions.
ANSWERING = Depends(ANSWERING_MARK)
# Stores what a client sends: counted as feedback posts and against the day's allowance.
FEEDBACK = Depends(FEEDBACK_MARK)
# A route of the chat page: counted against the chat's own per-client limit.
CHAT = Depends(CHAT_MARK)


class RouteMarks:
    """The marks of each ``(method, path)`` of ``app``, read from its routes on first use.

    A lookup is one dict access, as cheap as a set of paths written out by hand.
    A marked route with a path parameter is refused: it could not be looked up
    by its path, and would escape its limits.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._table: dict[tuple[str, str], frozenset[Mark]] | None = None

    def __call__(self, scope: Scope) -> frozenset[Mark]:
        if scope["type"] != "http":
            return frozenset()
        if self._table is None:
            self._table = route_marks(self.app.routes)
        return self._table.get((scope["method"], scope["path"]), frozenset())


def route_marks(routes: list[BaseRoute]) -> dict[tuple[str, str], frozenset[Mark]]:
    """``(method, path) -> marks`` of every marked route, included routers' routes too."""
    table: dict[tuple[str, str], frozenset[Mark]] = {}
    for route in iter_route_contexts(routes):
        dependencies = getattr(route, "dependencies", None) or []
        marks = frozenset(d.dependency for d in dependencies if isinstance(d.dependency, Mark))
        if not marks:
            continue
        if "{" in route.path or not isinstance(getattr(route, "methods", None), set):
            raise TypeError(f"a marked route needs a fixed path and methods: {route.path}")
        table |= {(method, route.path): marks for method in route.methods}
    return table


def install(app: FastAPI, settings: Settings) -> None:
    """Add the limiting middleware to ``app`` (safe defaults come from ``Settings``).

    Outermost first: the Host allow-list, CORS (only when ``cors_origins`` is
    set), the per-client rate limits, the body limit (the whole body, bounded by
    size and time, is read before anything else runs), the daily feedback
    allowance, then the bounded queue in front of the answering routes. Every
    refusal is a JSON ``{"detail": ...}``.
    """
    marks = RouteMarks(app)
    # add_middleware puts each new layer outside the previous ones.
    app.add_middleware(AnswerQueue, settings=settings, marks=marks)
    if settings.feedback_bytes_per_client_per_day:
        per_day = settings.feedback_bytes_per_client_per_day
        app.add_middleware(FeedbackAllowance, per_day=per_day, marks=marks)
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout_seconds
    )
    if settings.chat != "off":
        app.add_middleware(
            RateLimit,
            per_minute=settings.chat_rate_limit_per_minute,
            marks=marks,
            kinds={CHAT_MARK: "chat requests"},
        )
    if settings.rate_limit_per_minute:
        kinds = {ANSWERING_MARK: "questions", FEEDBACK_MARK: "feedback posts"}
        app.add_middleware(
            RateLimit, per_minute=settings.rate_limit_per_minute, marks=marks, kinds=kinds
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-Chat-Token"],
        )
    app.add_middleware(TrustedHosts, hosts=settings.trusted_hosts)


async def refuse(
    send: Send,
    status: int,
    detail: str,
    retry_after: float | None = None,
    close: bool = False,
) -> None:
    """Send a complete JSON error response ``{"detail": detail}`` (``close``: then hang up)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if retry_after is not None:
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(retry_after))))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _client(scope: Scope) -> str:
    return scope["client"][0] if scope.get("client") else "unknown"


def host_name(host_header: str) -> str:
    """The host of a ``Host`` header, without its port.

    >>> host_name("[::1]:8000"), host_name("LocalHost:80"), host_name("127.0.0.1")
    ('::1', 'localhost', '127.0.0.1')
    """
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class TrustedHosts:
    """400 for a request whose ``Host`` is not one of ``hosts`` ("*": any).

    A page on another site whose name was made to resolve to this server (DNS
    rebinding) sends its own name as Host: refusing it keeps that page from
    reading the API or passing the chat's same-origin check.
    """

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...]) -> None:
        self.app = app
        self.hosts = {host_name(h) for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.hosts:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if host_name(header) not in self.hosts:
            shown = header[:100] or "(none)"
            return await refuse(send, 400, f"this server does not answer to the host {shown!r}")
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


async def _read_body(receive: Receive, max_bytes: float) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body += message.get("body", b"")
        if len(body) > max_bytes:
            raise _BodyTooLarge
        if not message.get("more_body", False):
            return body


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` whole, then waits as the real one does."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()  # e.g. http.disconnect
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class BodyLimit:
    """The whole body read up front: 413 past ``max_bytes``, 408 past ``timeout`` seconds.

    Nothing inside (the queue, the route) runs until the body is complete, so a
    client that sends a head and then stalls holds no answering slot; it gets a
    408 and the connection is closed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"the request body is larger than {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await refuse(send, 413, too_large, close=True)
        try:
            async with asyncio.timeout(self.timeout):
                body = await _read_body(receive, self.max_bytes)
        except _BodyTooLarge:
            return await refuse(send, 413, too_large, close=True)
        except TimeoutError:
            detail = f"the request body did not arrive within {self.timeout:g} s"
            return await refuse(send, 408, detail, close=True)
        except _ClientGone:
            return None
        await self.app(scope, _replay(body, receive), send)


class RateLimit:
    """429 once a client address has made more than ``per_minute`` requests (token bucket).

    ``kinds`` maps each limited mark to what its requests are called in the
    refusal; routes of one kind share a client's allowance (a route has one
    mark of those a limit counts).
    """

    def __init__(
        self, app: ASGIApp, per_minute: int, marks: RouteMarks, kinds: dict[Mark, str]
    ) -> None:
        self.app, self.per_minute, self.marks, self.kinds = app, per_minute, marks, kinds
        # (client, kind) -> (tokens, last update)
        self.buckets: dict[tuple[str, str], tuple[float, float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = next((self.kinds[m] for m in self.marks(scope) if m in self.kinds), None)
        if kind is None:
            return await self.app(scope, receive, send)
        bucket = (_client(scope), kind)
        now, refill = time.monotonic(), self.per_minute / 60
        tokens, last = self.buckets.get(bucket, (self.per_minute, now))
        tokens = min(self.per_minute, tokens + (now - last) * refill)
        if tokens < 1:
            self.buckets[bucket] = (tokens, now)
            wait = (1 - tokens) / refill
            detail = f"more than {self.per_minute} {kind} a minute; try again in {wait:.0f} s"
            return await refuse(send, 429, detail, retry_after=wait)
        if len(self.buckets) >= _MAX_TRACKED_CLIENTS:
            # Forget clients whose bucket has refilled: they are back to a full allowance anyway.
            full = [c for c, (t, at) in self.buckets.items() if t + (now - at) * refill >= 1]
            for idle in full[: len(full) // 2 or 1]:
                del self.buckets[idle]
        self.buckets[bucket] = (tokens - 1, now)
        await self.app(scope, receive, send)


class FeedbackAllowance:
    """429 once a client address has had ``per_day`` bytes of feedback stored today (UTC).

    Counted by the bodies of stored feedback (201), so refusals cost nothing;
    the count starts again at midnight UTC.
    """

    MAX_CLIENTS = 100_000

    def __init__(self, app: ASGIApp, per_day: int, marks: RouteMarks) -> None:
        self.app, self.per_day, self.marks = app, per_day, marks
        self.day = datetime.now(UTC).date()
        self.stored: dict[str, int] = {}  # client -> bytes stored today

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if FEEDBACK_MARK not in self.marks(scope):
            return await self.app(scope, receive, send)
        now = datetime.now(UTC)
        if now.date() != self.day:
            self.day, self.stored = now.date(), {}
        client = _client(scope)
        body = await _read_body(receive, math.inf)  # read whole by BodyLimit already
        midnight = datetime.combine(self.day + timedelta(days=1), datetime.min.time(), UTC)
        wait = (midnight - now).total_seconds()
        used = self.stored.get(client, 0)
        if used + len(body) > self.per_day:
            detail = f"more than {self.per_day} bytes of feedback from this address today"
            return await refuse(send, 429, f"{detail}; try again tomorrow (UTC)", wait)
        if client not in self.stored and len(self.stored) >= self.MAX_CLIENTS:
            return await refuse(send, 503, "too much feedback today; try again tomorrow", wait)
        status = 0

        async def noted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, _replay(body, receive), noted_send)
        if status == 201:
            self.stored[client] = self.stored.get(client, 0) + len(body)


class AnswerQueue:
    """At most ``max_concurrency`` answers in progress and ``max_queue`` waiting; 503 beyond.

    A request that waits longer than ``queue_timeout_seconds`` for a slot also
    gets a 503 with Retry-After: a quick, deliberate refusal is better for a
    client than a reply that arrives after it has given up.
    """

    def __init__(self, app: ASGIApp, settings: Settings, marks: RouteMarks) -> None:
        self.app, self.marks = app, marks
        self.max_queue = settings.max_queue
        self.timeout = settings.queue_timeout_seconds
        self.slots = asyncio.Semaphore(settings.max_concurrency)
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if ANSWERING_MARK not in self.marks(scope):
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
