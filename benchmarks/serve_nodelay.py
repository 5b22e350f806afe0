"""`rag serve` with the TCP_NODELAY fix proposed for rag/cli.py, for `--tcp-nodelay` runs.

With ``--workers`` above 1 uvicorn binds the listening socket itself as
``socket.socket(family)``, whose ``proto`` is 0; asyncio only sets TCP_NODELAY
on connections of a socket whose proto says TCP, so each keep-alive response
(headers and body written apart) waits ~40 ms on Nagle and the client's delayed
ACK. Re-wrapping the socket with ``IPPROTO_TCP`` removes the wait.
"""

from __future__ import annotations

import socket

import uvicorn.config

from rag.cli import main

_bind_socket = uvicorn.config.Config.bind_socket


def _bind_tcp_socket(self: uvicorn.config.Config) -> socket.socket:
    sock = _bind_socket(self)
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock
    return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())


uvicorn.config.Config.bind_socket = _bind_tcp_socket  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
