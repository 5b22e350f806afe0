"""Index swaps under a running app: a rebuild moves it to the new index, damage never stops it."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import STORES
from fastapi.testclient import TestClient

from rag.embedding import Embedder
from rag.index import build_index
from rag.settings import Settings
from web.app import create_app

DATA_ENGINEERS = """---
title: Data engineering careers
url: https://careers.example/data-engineering/
---

## Salaries

Data engineers in Lisbon earn about 48,000 euros a year before tax.
Senior data engineers lead pipeline teams and mentor the juniors who join them.

## Skills

The core skills of a data engineer are SQL, Python and stream processing with Kafka.
"""

PROMPT_ENGINEERS = """---
title: Prompt engineering careers
url: https://careers.example/prompt-engineering/
---

## Salaries

Prompt engineers at Oslo start-ups are paid about 700,000 kroner a year.

## Work

A prompt engineer writes evaluation suites that check a language model's replies every night.
"""

NEW_QUESTION = "How much are prompt engineers at Oslo start-ups paid?"


def write_articles(settings: Settings, **articles: str) -> None:
    for name, text in articles.items():
        (settings.corpus_dir / f"{name}.md").write_text(text, encoding="utf-8")


@pytest.fixture()
def settings(tiny_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """A one-article corpus; the server looks for a rebuilt index five times a second.

    Tests parametrised with ``settings`` in STORES run on files and on PostgreSQL.
    """
    write_articles(tiny_settings, data_engineers=DATA_ENGINEERS)
    settings = tiny_settings.with_(reload_check_seconds=0.2)
    if getattr(request, "param", "files") == "postgres":
        settings = settings.with_(database_url=request.getfixturevalue("database_url"))
    return settings


@pytest.fixture()
def built(settings: Settings, embedder: Embedder) -> Settings:
    build_index(settings, embedder)
    return settings


def ask(client: httpx.Client | TestClient, question: str) -> httpx.Response:
    return client.post("/api/answer", json={"question": question, "top_k": 3})


def cited_urls(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {c["url"].split("#")[0] for c in response.json()["citations"]}


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {seconds} s")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(built: Settings) -> Iterator[str]:
    """The real app under a real uvicorn in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(built), host="127.0.0.1", port=port, log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: uvicorn_server.started, seconds=60)
    yield base
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_a_rebuild_under_live_traffic_fails_no_request(
    server: str, built: Settings, embedder: Embedder
) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with httpx.Client(base_url=server, timeout=10) as client:
            deadline = time.monotonic() + 60
            while not stop.is_set() and len(statuses) < 5000 and time.monotonic() < deadline:
                statuses.append(ask(client, "What do data engineers in Lisbon earn?").status_code)

    with httpx.Client(base_url=server, timeout=10) as client:
        before = client.get("/api/health").json()
        assert cited_urls(ask(client, NEW_QUESTION)) == {
            "https://careers.example/data-engineering/"
        }
        asker = threading.Thread(target=keep_asking)
        asker.start()
        time.sleep(1.1)  # built_at counts seconds: make the new one differ
        write_articles(built, prompt_engineers=PROMPT_ENGINEERS)
        build_index(built, embedder)
        wait_for(
            lambda: client.get("/api/health").json()["index_built_at"] != before["index_built_at"]
        )
        time.sleep(0.5)  # a little traffic on the new index too
        stop.set()
        asker.join()
        after = client.get("/api/health").json()
        assert (before["articles"], after["articles"]) == (1, 2)
        assert after["generation"] != before["generation"]
        assert "https://careers.example/prompt-engineering/" in cited_urls(
            ask(client, NEW_QUESTION)
        )
    assert len(statuses) >= 10, "too little traffic to mean anything"
    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} requests failed"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_manifest(**changes: object) -> Callable[[Path], None]:
    def edit(build: Path) -> None:
        manifest = json.loads((build / "manifest.json").read_text())
        (build / "manifest.json").write_text(json.dumps({**manifest, **changes}))

    return edit


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated dense.faiss": (
        lambda b: truncate(b / "dense.faiss"),
        r"the index file dense\.faiss is \d+ bytes, its manifest says \d+",
    ),
    "truncated passages": (
        lambda b: truncate(b / "passages.jsonl"),
        r"the index file passages\.jsonl is \d+ bytes",
    ),
    "missing bm25": (lambda b: shutil.rmtree(b / "bm25"), r"the index lacks bm25/"),
    "other model": (
        edit_manifest(model="other-model"),
        r"built with model 'other-model' but the settings ask for 'all-MiniLM-L6-v2'",
    ),
    "other dimension": (edit_manifest(dimension=512), r"holds 512-dimensional vectors"),
    "unknown format": (edit_manifest(format_version=99), r"has format version 99, this version"),
    "unreadable manifest": (lambda b: truncate(b / "manifest.json"), r"manifest .* is unreadable"),
}


def assert_unavailable(client: TestClient, reason: str) -> None:
    health = client.get("/api/health")
    assert health.status_code == 503, health.text
    assert health.json()["status"] == "unavailable"
    assert re.search(reason, health.json()["reason"]), health.json()
    answer = ask(client, "What do data engineers earn?")
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"] == health.json()["reason"]


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_a_missing_index_is_a_clear_503(
    settings: Settings, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    where = "in the database" if settings.database_url else "at .*"
    with caplog.at_level(logging.ERROR, "rag.web"), TestClient(create_app(settings)) as client:
        assert_unavailable(client, rf"no index {where}.*; run `rag index` to build it")
    assert any("index not loaded: no index " in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_index_at_start_up_is_a_clear_503(
    built: Settings, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    spoil, reason = DAMAGE[damage]
    spoil(built.index_dir.resolve())
    with caplog.at_level(logging.ERROR, "rag.web"), TestClient(create_app(built)) as client:
        assert_unavailable(client, reason)
    logged = [r.getMessage() for r in caplog.records if r.name == "rag.web"]
    assert logged, "nothing was logged at start-up"
    assert logged[0].startswith("index not loaded: "), logged


def point_index_at(settings: Settings, build: Path) -> None:
    """Re-point the index link atomically, as `rag index` does after a build."""
    link = settings.index_dir.with_name(".index.test-link")
    link.symlink_to(os.path.relpath(build, settings.index_dir.parent))
    os.replace(link, settings.index_dir)


@pytest.mark.parametrize("damage", ["truncated dense.faiss", "other dimension", "unknown format"])
def test_a_damaged_rebuild_never_replaces_the_loaded_index(
    built: Settings, embedder: Embedder, damage: str
) -> None:
    with TestClient(create_app(built)) as client:
        good = client.get("/api/health").json()
        # A rebuild that comes out damaged: built aside, spoilt, then linked in.
        time.sleep(1.1)
        write_articles(built, prompt_engineers=PROMPT_ENGINEERS)
        spoilt = build_index(built.with_(index_dir=built.index_dir.with_name("aside")), embedder)
        DAMAGE[damage][0](spoilt.path)
        point_index_at(built, spoilt.path)
        time.sleep(4 * built.reload_check_seconds + 0.5)
        now = client.get("/api/health").json()  # the old index, said to be stale, and why
        assert (now.pop("status"), good.pop("status")) == ("stale", "ok")
        assert "run `rag index` to rebuild" in now.pop("reason")
        assert now == good
        assert cited_urls(ask(client, "What do data engineers in Lisbon earn?")) == {
            "https://careers.example/data-engineering/"
        }
        # And the next good build is picked up.
        build_index(built, embedder)
        wait_for(lambda: client.get("/api/health").json()["articles"] == 2)


def test_an_odd_manifest_at_start_up_is_a_503_not_a_crash(built: Settings) -> None:
    edit_manifest(counts=[])(built.index_dir.resolve())
    with TestClient(create_app(built)) as client:
        assert client.get("/api/health").status_code == 503


def test_an_odd_manifest_in_a_rebuild_does_not_stop_later_reloads(
    built: Settings, embedder: Embedder
) -> None:
    with TestClient(create_app(built)) as client:
        odd = build_index(built.with_(index_dir=built.index_dir.with_name("aside")), embedder)
        edit_manifest(counts=[])(odd.path)
        point_index_at(built, odd.path)
        time.sleep(4 * built.reload_check_seconds + 0.5)
        assert client.get("/api/health").json()["articles"] == 1
        time.sleep(1.1)
        write_articles(built, prompt_engineers=PROMPT_ENGINEERS)
        build_index(built, embedder)
        wait_for(lambda: client.get("/api/health").json()["articles"] == 2, seconds=5)
