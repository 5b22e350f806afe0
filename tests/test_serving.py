"""The real server on a real socket: stalled and slow clients, connections per client, proxies."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from rag.embedding import Embedder
from rag.index import build_index
from rag.settings import Settings
from web.app import create_app
from web.serve import server_config

ARTICLE = """---
title: Machine learning engineer careers
url: https://careers.example/ml-engineering/
---

## Pay

Machine learning engineers in Berlin earn about 75,000 euros a year.
"""
QUESTION = b'{"question": "What do machine learning engineers in Berlin earn?"}'
PATIENCE = 30.0  # seconds a test waits for something that takes a second or two


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    root = tmp_path_factory.mktemp("serving")
    (root / "corpus").mkdir()
    (root / "corpus" / "ml.md").write_text(ARTICLE, encoding="utf-8")
    built = Settings(corpus_dir=root / "corpus", index_dir=root / "index", data_dir=root / "data")
    build_index(built, embedder)
    return built


@contextmanager
def running(settings: Settings) -> Iterator[tuple[str, int]]:
    """The app under the product's own uvicorn config, in a thread; yields (host, port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = server_config(settings, "127.0.0.1", port, app=create_app(settings))
    config.log_level = "warning"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not become healthy within 120 s")
        time.sleep(0.25)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def ask(port: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/api/answer",
        content=QUESTION,
        headers={"content-type": "application/json", **(headers or {})},
        timeout=PATIENCE,
    )


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after PATIENCE s)."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def stalled_body(port: int) -> socket.socket:
    """A request that sends its head and a few bytes of a 100-byte body, then nothing."""
    sock = connect(port)
    head = (
        "POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"qu')
    return sock


def test_eight_stalled_bodies_do_not_deny_answers(settings: Settings) -> None:
    with running(settings.with_(body_timeout_seconds=3)) as (_, port):
        stalled = [stalled_body(port) for _ in range(8)]
        time.sleep(0.5)  # let the server take them in before the real question
        try:
            response = ask(port)
            assert response.status_code == 200, response.text
            assert response.json()["answered"] is True
            for sock in stalled:
                reply = read_until_closed(sock)
                assert reply.startswith(b"HTTP/1.1 408 "), reply
                assert b"the request body did not arrive within 3 s" in reply
        finally:
            for sock in stalled:
                sock.close()


@pytest.mark.parametrize("sent", [b"", b"POST /api/answer HTTP/1.1\r\nHost: 127"])
def test_a_connection_stalled_in_its_head_is_closed(settings: Settings, sent: bytes) -> None:
    with running(settings.with_(header_timeout_seconds=1)) as (_, port), connect(port) as sock:
        sock.sendall(sent)
        assert read_until_closed(sock) == b""


def test_a_head_sent_a_byte_at_a_time_is_closed_all_the_same(settings: Settings) -> None:
    head = b"POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    with running(settings.with_(header_timeout_seconds=1)) as (_, port), connect(port) as sock:
        sock.settimeout(0.2)
        deadline, closed = time.monotonic() + PATIENCE, False
        for byte in head:
            if time.monotonic() > deadline:
                break
            try:
                sock.sendall(bytes([byte]))
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:  # reset or broken pipe: closed by the server
                closed = True
            if closed:
                break
        assert closed, "a client trickling its head kept the connection open"


def test_connections_per_client_are_capped(settings: Settings) -> None:
    limited = settings.with_(max_connections_per_client=2, header_timeout_seconds=60)
    with running(limited) as (_, port):
        idle = [connect(port) for _ in range(2)]
        time.sleep(0.5)
        with connect(port) as third:
            reply = read_until_closed(third)
        assert reply.startswith(b"HTTP/1.1 429 "), reply
        assert b"more than 2 open connections from this address" in reply
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + PATIENCE
        while (response := ask(port)).status_code == 429 and time.monotonic() < deadline:
            time.sleep(0.2)  # the server notices the closed connections a moment later
        assert response.status_code == 200, response.text


def test_a_forged_forwarded_for_does_not_escape_the_rate_limit(settings: Settings) -> None:
    with running(settings.with_(rate_limit_per_minute=1)) as (_, port):
        first = ask(port, {"x-forwarded-for": "203.0.113.1"})
        second = ask(port, {"x-forwarded-for": "203.0.113.2"})
    assert first.status_code == 200, first.text
    assert second.status_code == 429, second.text


def test_forwarded_for_is_believed_from_a_trusted_proxy(settings: Settings) -> None:
    behind_proxy = settings.with_(rate_limit_per_minute=1, trusted_proxies=("127.0.0.1",))
    with running(behind_proxy) as (_, port):
        first = ask(port, {"x-forwarded-for": "203.0.113.1"})
        second = ask(port, {"x-forwarded-for": "203.0.113.2"})
        again = ask(port, {"x-forwarded-for": "203.0.113.1"})
    assert [first.status_code, second.status_code, again.status_code] == [200, 200, 429]
