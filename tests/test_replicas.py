"""Two real `rag serve` replicas on one database: a rebuild under load fails no request."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, article

from rag.embedding import Embedder
from rag.index import build_index
from rag.settings import Settings

QUESTION = "What do Quantum specialists in Porto earn?"
NEW_ARTICLE = "https://careers.example/quantum/"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(settings: Settings, root: Path) -> dict[str, str]:
    """A replica's environment: the shared database, folders of its own."""
    return {
        **os.environ,
        "RAG_CORPUS_DIR": str(settings.corpus_dir),
        "RAG_INDEX_DIR": str(root / "index"),
        "RAG_DATA_DIR": str(root / "data"),
        "RAG_DATABASE_URL": settings.database_url,
        "RAG_RELOAD_CHECK_SECONDS": "1",
    }


def start_replica(settings: Settings, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    root.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=environment(settings, root),
        stdout=subprocess.DEVNULL,
        stderr=open(root / "stderr.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(url: str, process: subprocess.Popen[bytes], seconds: float = 240) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the replica at {url} exited with {process.returncode}")
        try:
            response = httpx.get(f"{url}/api/health", timeout=5)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the replica at {url} was not healthy within {seconds} s")


def cites(url: str, question: str) -> set[str]:
    response = httpx.post(f"{url}/api/answer", json={"question": question, "top_k": 3}, timeout=30)
    assert response.status_code == 200, response.text
    return {c["url"].split("#")[0] for c in response.json()["citations"]}


def test_a_rebuild_under_load_fails_no_request_on_either_replica(
    tiny_settings: Settings, database_url: str, embedder: Embedder, tmp_path: Path
) -> None:
    settings = tiny_settings.with_(database_url=database_url)
    for slug in ("alpha", "beta"):
        (settings.corpus_dir / f"{slug}.md").write_text(article(slug, slug.title()))
    build_index(settings, embedder)
    replicas = [start_replica(settings, tmp_path / f"replica-{n}") for n in (1, 2)]
    statuses: list[tuple[str, int]] = []
    stop = threading.Event()
    askers: list[threading.Thread] = []
    try:
        before = {url: wait_healthy(url, process)["generation"] for process, url in replicas}
        assert len(set(before.values())) == 1

        def keep_asking(url: str) -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("/api/answer", json={"question": QUESTION, "top_k": 3})
                    statuses.append((url, response.status_code))

        askers += [threading.Thread(target=keep_asking, args=(url,)) for _, url in replicas]
        for asker in askers:
            asker.start()
        (tmp_path / "quantum.md").write_text(article("quantum", "Quantum"))
        added = subprocess.run(
            [sys.executable, "-m", "rag.cli", "add", str(tmp_path / "quantum.md")],
            cwd=ROOT,
            env=environment(settings, tmp_path / "builder"),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert added.returncode == 0, added.stderr
        finished = time.monotonic()
        moved: dict[str, float] = {}
        while len(moved) < len(replicas) and time.monotonic() - finished < 30:
            for _, url in replicas:
                health = httpx.get(f"{url}/api/health", timeout=10).json()
                if url not in moved and health["generation"] != before[url]:
                    moved[url] = time.monotonic() - finished
            time.sleep(0.1)
        assert len(moved) == len(replicas), f"not every replica moved to the new index: {moved}"
        # Both serve the new article; the load went on through the swap.
        for _, url in replicas:
            assert NEW_ARTICLE in cites(url, QUESTION)
        time.sleep(1)
    finally:
        stop.set()
        for process, _ in replicas:
            process.terminate()
        for process, _ in replicas:
            process.wait(timeout=60)
    for asker in askers:
        asker.join(timeout=60)
    for _, url in replicas:
        asked = [status for where, status in statuses if where == url]
        assert len(asked) >= 10, f"too little traffic on {url} to mean anything"
        assert set(asked) == {200}, f"{len(asked) - asked.count(200)} requests failed on {url}"
    # Within a few seconds of the build's end (it notifies them; they load the new one).
    assert max(moved.values()) < 10, moved
