"""Serving: the app under uvicorn, in one process or in several sharing one listening socket."""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.supervisors import Multiprocess


class _TCPConfig(uvicorn.Config):
    """uvicorn's config, with a listening socket that says it is TCP.

    For several workers uvicorn binds ``socket.socket(family)``, whose
    ``proto`` is 0, and asyncio then never sets TCP_NODELAY on its
    connections: every keep-alive response waits ~40 ms for the client's
    delayed ACK. Re-wrapping the socket with ``IPPROTO_TCP`` removes the wait.
    """

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return sock
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())


def serve(host: str, port: int, workers: int) -> None:
    """Serve `web.app.app_from_env` until interrupted; each worker loads the index itself."""
    config = _TCPConfig(
        "web.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )
    if workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
