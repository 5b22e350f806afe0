"""Web access: API keys with a per-key rate limit, and who may use the chat (tokens or keys)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rag.errors import RagError, SettingsError
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


class ChatTokens:
    """Signed, short-lived tokens the chat page embeds; its posts must bring one back.

    A token is ``<expiry>.<HMAC-SHA256 of the expiry>``, signed with a random
    key kept in ``data/chat-secret`` (created once, shared by every worker), so
    a page served by one worker is accepted by the others. Another site cannot
    read the page, so it cannot post with its token either.
    """

    def __init__(self, settings: Settings) -> None:
        self.seconds = settings.chat_token_seconds
        self._secret = _chat_secret(settings)

    def _signature(self, expiry: str) -> str:
        return hmac.new(self._secret, expiry.encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self, now: float | None = None) -> str:
        """A token good for ``chat_token_seconds`` from ``now``."""
        expiry = str(int((time.time() if now is None else now) + self.seconds))
        return f"{expiry}.{self._signature(expiry)}"

    def valid(self, token: str, now: float | None = None) -> bool:
        """Whether ``token`` was issued here and has not expired."""
        expiry, _, signature = token.partition(".")
        if not expiry.isdigit() or not hmac.compare_digest(signature, self._signature(expiry)):
            return False
        return int(expiry) >= (time.time() if now is None else now)


def _chat_secret(settings: Settings) -> bytes:
    path = settings.chat_secret_file
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            draft.write_text(secrets.token_hex(32))
            draft.chmod(0o600)
            try:
                os.link(draft, path)  # atomic, and never replaces another worker's key
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        secret = path.read_text().strip()
    except OSError as exc:
        raise SettingsError(
            f"the chat's signing key {path} cannot be read or made: {exc}"
        ) from None
    if len(secret) < 32:
        raise SettingsError(
            f"the chat's signing key {path} is damaged; delete it to make a new one"
        )
    return secret.encode()


def install(app: FastAPI, settings: Settings) -> None:
    """Give ``app`` its per-key rate limit and, for a public chat, its token signer."""
    app.state.key_rate_limit = KeyRateLimit(settings.key_rate_limit_per_minute)
    app.state.chat_tokens = ChatTokens(settings) if settings.chat == "public" else None


def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str | None:
    """The name of the request's API key, or None while keys are off (no key was ever created).

    401 without a current key, 429 with ``Retry-After`` past the key's rate
    limit, 503 when the keys file cannot be read (the API stays closed).
    """
    return _check_key(request, credentials.credentials if credentials else None, required=False)


def _check_key(request: Request, key: str | None, required: bool) -> str | None:
    """The name of ``key``, counted against its rate limit; None while keys are off if allowed."""
    settings: Settings = request.app.state.settings
    try:
        if not keys_enabled(settings):
            if not required:
                return None
            raise HTTPException(
                503,
                "the chat needs an API key and none exists yet; create one: rag keys create NAME",
            )
        name = verify_key(settings, key) if key else None
    except RagError as exc:
        log.error("API keys cannot be checked: %s", exc)
        raise HTTPException(503, "API keys cannot be checked right now; try again later") from None
    if name is None:
        detail = (
            "the API key is not valid (mistyped or revoked)"
            if key
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
    """403 for a post to the chat that a browser did not send from this site.

    Browsers send ``Origin`` with every POST (``Referer`` when a privacy setting
    drops it); it must name this server's own host, itself one of the trusted
    hosts (`web.limits.TrustedHosts`). A post with neither is refused too: the
    chat's routes are for its page, programs have ``/api``.
    """
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is None:
        raise HTTPException(403, "posts to the chat must come from its page on this site")
    host = request.headers.get("host", "").lower()
    if not host or urlsplit(claimed).netloc.lower() != host:
        raise HTTPException(403, "cross-site posts are refused; use the page on this site")


def chat_on(request: Request) -> None:
    """404 for every chat route when ``RAG_CHAT=off``."""
    if request.app.state.settings.chat == "off":
        raise HTTPException(404, "the chat is off on this server; use the API under /api")


def check_chat(request: Request, token: str | None, key: str | None) -> str | None:
    """Let a chat request through as ``RAG_CHAT`` says; the API key's name in "keys" mode.

    "public": the page's token is required (403 without a valid one); "keys": a
    current API key, counted against its rate limit, as for ``/api``. Either way
    the chat's per-client rate limit (`web.limits`) has already been passed.
    """
    settings: Settings = request.app.state.settings
    if settings.chat == "keys":
        return _check_key(request, key, required=True)
    tokens: ChatTokens = request.app.state.chat_tokens
    if not token:
        raise HTTPException(403, "the chat's token is missing; reload the page and ask again")
    if not tokens.valid(token):
        raise HTTPException(403, "the chat's page has expired; reload it and ask again")
    return None


def chat_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str | None:
    """`check_chat` for the page's JSON posts: the token in ``X-Chat-Token``, a key as Bearer."""
    key = credentials.credentials if credentials else None
    return check_chat(request, request.headers.get(CHAT_TOKEN_HEADER), key)


CHAT_TOKEN_HEADER = "x-chat-token"
ChatKeyName = Annotated[str | None, Depends(chat_access)]
