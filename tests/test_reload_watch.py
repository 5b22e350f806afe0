"""The reload watcher: a folder the server cannot enter neither crashes it nor ends hot reload."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from rag.embedding import Embedder
from rag.index import build_index
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def article(slug: str, topic: str) -> str:
    return (
        f"---\ntitle: {topic} careers\nurl: https://careers.example/{slug}/\n---\n\n"
        f"## Pay\n\n{topic} specialists in Porto earn about 51,000 euros a year.\n\n"
        f"## Skills\n\nA {topic} specialist writes tests and reviews designs every week.\n"
    )


def unprivileged() -> list[str]:
    """A command prefix under which file permissions bind: root loses its power to bypass them."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to bind")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def until(check: Callable[[], dict | None], what: str, timeout: float = 180) -> dict:
    """Poll ``check`` until it returns a result; fail after ``timeout`` seconds."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if (found := check()) is not None:
                return found
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.25)
    pytest.fail(f"{what} not seen within {timeout} s (last: {last})")


def test_an_unreadable_index_neither_crashes_the_server_nor_ends_hot_reload(
    tmp_path: Path, embedder: Embedder
) -> None:
    tree = tmp_path
    settings = Settings(
        corpus_dir=tree / "corpus", index_dir=tree / "index", data_dir=tree / "data"
    )
    settings.corpus_dir.mkdir()
    (settings.corpus_dir / "base.md").write_text(article("base", "Testing"))
    build_index(settings, embedder)
    build = settings.index_dir.resolve()
    build.chmod(0o000)  # as with a brief chmod, or a build made under umask 077

    port = free_port()
    server = subprocess.Popen(
        [*unprivileged(), sys.executable, "-m", "rag.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env={
            **os.environ,
            "HOME": str(tree),
            "RAG_CORPUS_DIR": str(settings.corpus_dir),
            "RAG_INDEX_DIR": str(settings.index_dir),
            "RAG_DATA_DIR": str(settings.data_dir),
            "RAG_RELOAD_CHECK_SECONDS": "0.2",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/health"

    def health(status: str, articles: int | None = None) -> Callable[[], dict | None]:
        def check() -> dict | None:
            if server.poll() is not None:
                pytest.fail(f"the server exited with {server.returncode}")
            body = httpx.get(url, timeout=5).json()
            wanted = body["status"] == status and articles in (None, body.get("articles"))
            return body if wanted else None

        return check

    try:
        down = until(health("unavailable"), "503 while the index cannot be read", timeout=300)
        assert "cannot be read" in down["reason"], down
        assert str(tree) not in down["reason"]

        build.chmod(0o755)
        assert until(health("ok", 1), "the index loaded once readable")["articles"] == 1

        build.chmod(0o000)
        stale = until(health("stale"), "stale while the served index cannot be read")
        assert "cannot be read" in stale["reason"] and str(tree) not in stale["reason"]
        build.chmod(0o755)
        assert "reason" not in until(health("ok"), "ok once readable again")

        (settings.corpus_dir / "more.md").write_text(article("more", "Rust"))
        build_index(settings, embedder)
        assert until(health("ok", 2), "the rebuilt index hot-reloaded")["passages"] == 4
    finally:
        build.chmod(0o755)
        server.terminate()
        server.wait(timeout=60)
