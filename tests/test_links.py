"""Citation links: a URL that is not http(s) or relative is shown as text, never as a link.

Ingest refuses such URLs; these tests serve an index built before it did, with a
`javascript:` article URL written into it, as the page and the script must not
depend on every index having been rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import lxml.html
import pytest
from fastapi.testclient import TestClient

from rag.embedding import Embedder
from rag.index import build_index
from rag.settings import Settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser

QUESTION = "What do data engineers earn?"
SITE = "http://testserver"
HOSTILE = "javascript:alert(document.domain)//"


@pytest.fixture(scope="module")
def hostile_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    root = tmp_path_factory.mktemp("links")
    (root / "corpus").mkdir()
    (root / "corpus" / "pay.md").write_text(
        "---\ntitle: Data pay\nurl: https://ex.org/pay/\ndate: 2025-01-02\n---\n## Pay\n\n"
        "Data engineers earn $120,000 a year on average in the United States.\n",
        encoding="utf-8",
    )
    settings = Settings(
        corpus_dir=root / "corpus",
        index_dir=root / "index",
        data_dir=root / "data",
        trusted_hosts=("127.0.0.1", "localhost", "testserver"),
    )
    build_index(settings, embedder, progress=False)
    build = settings.index_dir.resolve()
    for name in ("passages.jsonl", "articles.json"):
        text = (build / name).read_text(encoding="utf-8")
        assert "https://ex.org/pay/" in text
        (build / name).write_text(text.replace("https://ex.org/pay/", HOSTILE), encoding="utf-8")
    # Re-record the rewritten files as the build would have: an old index is whole, only
    # its URLs are of a kind ingest now refuses.
    manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
    for name in ("passages.jsonl", "articles.json"):
        data = (build / name).read_bytes()
        manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (build / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return settings


@pytest.fixture(scope="module")
def hostile_client(hostile_index: Settings) -> Iterator[TestClient]:
    from web.app import create_app

    with TestClient(create_app(hostile_index)) as client:
        yield client


def test_the_api_answers_with_the_stored_url(hostile_client: TestClient) -> None:
    answer = hostile_client.post("/api/answer", json={"question": QUESTION}).json()

    assert answer["citations"] and answer["citations"][0]["url"].startswith("javascript:")


def test_the_page_shows_a_non_web_url_as_text(hostile_client: TestClient) -> None:
    page = lxml.html.fromstring(hostile_client.get("/").text)
    token = page.xpath("//meta[@name='chat-token']/@content")[0]
    response = hostile_client.post(
        "/", data={"question": QUESTION, "chat_token": token}, headers={"origin": SITE}
    )
    assert response.status_code == 200, response.text
    page = lxml.html.fromstring(response.text)

    sources = page.xpath("//a[contains(@class, 'source')] | //a[@class='passage-link']")
    assert sources, "the answer shows no sources"
    assert [a.get("href") for a in sources] == [None] * len(sources)
    assert all("Data pay" in a.text_content() for a in sources)
    assert not [a for a in page.iter("a") if (a.get("href") or "").startswith("javascript:")]


@pytest.mark.browser
def test_the_script_shows_a_non_web_url_as_text(
    hostile_index: Settings,
    serve: Callable[[Settings], AbstractContextManager[str]],
    browser: Browser,
) -> None:
    from playwright.sync_api import expect

    with serve(hostile_index) as url:
        page = browser.new_context(base_url=url).new_page()
        try:
            page.goto("/")
            page.get_by_label("Your question").fill(QUESTION)
            with page.expect_response("**/api/answer"):
                page.get_by_label("Your question").press("Enter")
            expect(page.locator(".turn-answer")).to_have_count(1)
            sources = page.locator(".turn-answer a.source, .turn-answer a.passage-link")
            expect(sources.first).to_contain_text("Data pay")
            hrefs = sources.evaluate_all("links => links.map(a => a.getAttribute('href'))")
        finally:
            page.context.close()

    assert hrefs and hrefs == [None] * len(hrefs)
