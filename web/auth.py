"""Web access: API keys with a per-key rate limit, and the same-origin check of the chat's posts."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rag.errors import RagError
from rag.keys import keys_enabled, verify_key
from rag.settings import Settings

log = logging.getLogger("rag.web")

WINDOW_SECONDS = 60.0
# auto_error=False: a missing or non-Bearer header is answered by `require_key`, in our format.
bearer = HTTPBearer(auto_error=False, description="An API key from `rag keys create NAME`.")


class KeyRateLimit:
    """At most ``per_minute`` requests per key name in any 60 s (a sliding window log).

    Thread-safe: sync routes and their dependencies run in a thread pool. Memory
    is bounded by the number of keys times ``per_minute`` timestamps.
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}

    def wait(self, name: str, now: float | None = None) -> float:
        """Count a request by ``name``: 0 when allowed, else seconds until one would be."""
        if not self.per_minute:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = self._recent.setdefault(name, deque())
            while recent and recent[0] <= now - WINDOW_SECONDS:
                recent.popleft()
            if len(recent) >= self.per_minute:
                return recent[0] + WINDOW_SECONDS - now
            recent.append(now)
            return 0.0


def install(app: FastAPI, settings: Settings) -> None:
    """Give ``app`` its per-key rate limit (one per app, shared by its requests)."""
    app.state.key_rate_limit = KeyRateLimit(settings.key_rate_limit_per_minute)


def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str | None:
    """The name of the request's API key, or None while keys are off (no key was ever created).

    401 without a current key, 429 with ``Retry-After`` past the key's rate
    limit, 503 when the keys file cannot be read (the API stays closed).
    """
    settings: Settings = request.app.state.settings
    try:
        if not keys_enabled(settings):
            return None
        name = verify_key(settings, credentials.credentials) if credentials else None
    except RagError as exc:
        log.error("API keys cannot be checked: %s", exc)
        raise HTTPException(503, "API keys cannot be checked right now; try again later") from None
    if name is None:
        detail = (
            "the API key is not valid (mistyped or revoked)"
            if credentials
            else "this API needs a key: send the header 'Authorization: Bearer <key>'"
        )
        raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
    wait = request.app.state.key_rate_limit.wait(name)
    if wait:
        per_minute = settings.key_rate_limit_per_minute
        raise HTTPException(
            429,
            f"more than {per_minute} requests a minute with this key; try again in {wait:.0f} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return name


ApiKeyName = Annotated[str | None, Depends(require_key)]


def same_origin(request: Request) -> None:
    """403 for a post that a browser sent from another site (cross-site request forgery).

    Browsers send ``Origin`` with every POST (``Referer`` when a privacy setting
    drops it); it must name this server's own host. A request with neither comes
    from a program, not a browser tricked by another site, and is let through.
    """
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is None:
        return
    host = request.headers.get("host", "").lower()
    if not host or urlsplit(claimed).netloc.lower() != host:
        raise HTTPException(403, "cross-site posts are refused; use the page on this site")
