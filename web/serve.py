"""Serving: the app under uvicorn, in one process or in several sharing one listening socket."""

from __future__ import annotations

import asyncio
import json
import socket
from contextlib import suppress
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from rag.settings import Settings


class _TCPConfig(uvicorn.Config):
    """uvicorn's config, with a listening socket that says it is TCP.

    For several workers uvicorn binds ``socket.socket(family)``, whose
    ``proto`` is 0, and asyncio then never sets TCP_NODELAY on its
    connections: every keep-alive response waits ~40 ms for the client's
    delayed ACK. Re-wrapping the socket with ``IPPROTO_TCP`` removes the wait.
    """

    def __init__(self, app: Any, settings: Settings, **options: Any) -> None:
        super().__init__(app, **options)
        self.settings = settings
        self.open_connections: dict[str, int] = {}  # client address -> open connections

    def __getstate__(self) -> dict[str, Any]:
        # Each worker process counts its own connections.
        return self.__dict__ | {"open_connections": {}}

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return sock
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for request heads and a cap per client.

    A connection must send a complete request head within ``header_timeout_seconds``
    of opening, or of its previous response; sending a byte now and then does not
    extend it (uvicorn alone waits for ever). A client address may hold at most
    ``max_connections_per_client`` open connections; one more gets a 429 and is closed.
    The body's own deadline is kept by `web.limits.BodyLimit`, inside the app.
    """

    config: _TCPConfig

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._address = self.client[0] if self.client else "unknown"
        cap, open_ = self.config.settings.max_connections_per_client, self.config.open_connections
        if cap and open_.get(self._address, 0) >= cap:
            self._address = None
            body = json.dumps({"detail": f"more than {cap} open connections from this address"})
            transport.write(
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
                b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body.encode())
            )
            transport.close()
            return
        open_[self._address] = open_.get(self._address, 0) + 1
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._head_arrived()
        if self._address is not None:
            open_ = self.config.open_connections
            open_[self._address] -= 1
            if not open_[self._address]:
                del open_[self._address]
            self._address = None

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._head_arrived()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._await_head()

    def _await_head(self) -> None:
        self._head_arrived()
        timeout = self.config.settings.header_timeout_seconds
        self._head_deadline = self.loop.call_later(timeout, self._head_too_slow)

    def _head_arrived(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            # A head cut off mid-way leaves nothing to close politely.
            with suppress(h11.LocalProtocolError):
                self.conn.send(h11.ConnectionClosed())
            self.transport.close()


def server_config(
    settings: Settings, host: str, port: int, workers: int = 1, app: Any = None
) -> uvicorn.Config:
    """uvicorn's config for ``settings``: `web.app.app_from_env` in each worker unless ``app``."""
    return _TCPConfig(
        app or "web.app:app_from_env",
        settings,
        factory=app is None,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        http=GuardedH11Protocol,
        # The client is the connecting address unless it is a proxy we were told to trust.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
    )


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Serve `web.app.app_from_env` until interrupted; each worker loads the index itself."""
    config = server_config(settings, host, port, workers)
    if workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
