"""Who may use the chat (RAG_CHAT=public|keys|off), and that every chat route passes a limit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import lxml.html
import pytest
from conftest import one_article_index
from fastapi.testclient import TestClient

from rag.embedding import Embedder
from rag.keys import create_key
from rag.settings import Settings
from web.app import create_app

ARTICLE = """---
title: Machine learning engineer careers
url: https://careers.example/ml-engineering/
---

## Pay

Machine learning engineers in Berlin earn about 75,000 euros a year.
"""
QUESTION = "What do machine learning engineers in Berlin earn?"
SITE = {"origin": "http://testserver"}
FEEDBACK = {"question": QUESTION, "answer": "a", "passage_ids": [], "helpful": True}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    root = tmp_path_factory.mktemp("chat-access")
    return one_article_index(root, ARTICLE, embedder, trusted_hosts=("testserver",))


@pytest.fixture()
def settings(built: Settings, tmp_path: Path) -> Settings:
    """The module's index with a data folder of the test's own (keys, feedback, signing key)."""
    return built.with_(data_dir=tmp_path / "data")


@contextmanager
def chat(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def page(client: TestClient) -> lxml.html.HtmlElement:
    response = client.get("/")
    assert response.status_code == 200, response.text
    return lxml.html.fromstring(response.text)


def token_of(client: TestClient) -> str:
    return page(client).xpath("//meta[@name='chat-token']/@content")[0]


def detail(response: httpx.Response) -> str:
    return response.json()["detail"]


# Public: the page's token, and a per-client limit on every chat route.


@pytest.mark.parametrize(
    ("path", "body"),
    [("/chat/api/answer", {"question": QUESTION}), ("/chat/api/feedback", FEEDBACK)],
)
def test_with_keys_on_a_program_gets_nothing_from_the_chat_routes(
    settings: Settings, path: str, body: dict
) -> None:
    create_key(settings, "partner")
    with chat(settings) as client:
        assert client.post("/api/answer", json={"question": QUESTION}).status_code == 401
        bare = client.post(path, json=body)
        same_site_without_token = client.post(path, json=body, headers=SITE)
    assert bare.status_code == 403, bare.text
    assert detail(bare) == "posts to the chat must come from its page on this site"
    assert same_site_without_token.status_code == 403, same_site_without_token.text
    assert detail(same_site_without_token) == (
        "the chat's token is missing; reload the page and ask again"
    )


def test_the_form_without_a_token_shows_why_on_the_page(settings: Settings) -> None:
    with chat(settings) as client:
        response = client.post("/", data={"question": QUESTION}, headers=SITE)
    assert response.status_code == 403, response.text
    error = lxml.html.fromstring(response.text).get_element_by_id("form-error")
    assert error.text_content() == "the chat's token is missing; reload the page and ask again"


def test_the_page_embeds_a_token_that_its_posts_bring_back(settings: Settings) -> None:
    with chat(settings) as client:
        html = page(client)
        token = html.xpath("//meta[@name='chat-token']/@content")[0]
        in_forms = html.xpath("//form[@method='post']/input[@name='chat_token']/@value")
        assert in_forms == [token, token]  # the example questions and the composer
        answered = client.post(
            "/chat/api/answer", json={"question": QUESTION}, headers=SITE | {"x-chat-token": token}
        )
        stored = client.post(
            "/chat/api/feedback", json=FEEDBACK, headers=SITE | {"x-chat-token": token}
        )
        form = client.post("/", data={"question": QUESTION, "chat_token": token}, headers=SITE)
    assert answered.status_code == 200, answered.text
    assert answered.json()["answered"] is True
    assert stored.status_code == 201, stored.text
    assert form.status_code == 200, form.text


@pytest.mark.parametrize("kind", ["expired", "forged", "garbage"])
def test_an_expired_or_forged_token_is_refused(settings: Settings, kind: str) -> None:
    from web.auth import ChatTokens

    tokens = ChatTokens(settings)
    token = {
        "expired": tokens.issue(now=time.time() - settings.chat_token_seconds - 5),
        "forged": str(int(time.time()) + 600) + "." + "0" * 32,
        "garbage": "not-a-token",
    }[kind]
    with chat(settings) as client:
        response = client.post(
            "/chat/api/answer", json={"question": QUESTION}, headers=SITE | {"x-chat-token": token}
        )
    assert response.status_code == 403, response.text
    assert detail(response) == "the chat's page has expired; reload it and ask again"


def test_a_token_from_one_worker_is_good_at_another(settings: Settings) -> None:
    with chat(settings) as first:
        token = token_of(first)
    with chat(settings) as second:
        response = second.post(
            "/chat/api/answer", json={"question": QUESTION}, headers=SITE | {"x-chat-token": token}
        )
    assert response.status_code == 200, response.text
    assert (settings.data_dir / "chat-secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("mode", ["public", "keys"])
def test_every_chat_route_passes_the_per_client_limit(settings: Settings, mode: str) -> None:
    limited = settings.with_(chat=mode, chat_rate_limit_per_minute=3)
    key = create_key(limited, "reader")
    with chat(limited) as client:
        html = page(client)  # 1: the page itself counts
        token = html.xpath("//meta[@name='chat-token']/@content") or [""]
        headers = SITE | {"x-chat-token": token[0], "authorization": f"Bearer {key}"}
        asked = client.post("/chat/api/answer", json={"question": QUESTION}, headers=headers)
        told = client.post("/chat/api/feedback", json=FEEDBACK, headers=headers)
        form = {"question": QUESTION, "chat_token": token[0], "api_key": key}
        refused = [
            client.post("/", data=form, headers=SITE),
            client.post("/chat/api/answer", json={"question": QUESTION}, headers=headers),
            client.get("/"),
        ]
    assert [asked.status_code, told.status_code] == [200, 201], told.text
    assert [r.status_code for r in refused] == [429, 429, 429]
    assert detail(refused[0]).startswith("more than 3 chat requests a minute; try again in")
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)


# Keys: the page asks for a key.


def test_with_keys_the_page_asks_for_a_key_and_needs_one(settings: Settings) -> None:
    keyed = settings.with_(chat="keys")
    with chat(keyed) as client:
        none_yet = client.post("/chat/api/answer", json={"question": QUESTION}, headers=SITE)
        key = create_key(keyed, "reader")
        html = page(client)
        assert html.xpath("//meta[@name='chat-token']") == []
        assert html.xpath("//form[@id='ask']//input[@type='password']/@name") == ["api_key"]
        without = client.post("/chat/api/answer", json={"question": QUESTION}, headers=SITE)
        wrong = client.post(
            "/chat/api/answer",
            json={"question": QUESTION},
            headers=SITE | {"authorization": "Bearer rag_wrong"},
        )
        bearer = SITE | {"authorization": f"Bearer {key}"}
        answered = client.post("/chat/api/answer", json={"question": QUESTION}, headers=bearer)
        stored = client.post("/chat/api/feedback", json=FEEDBACK, headers=bearer)
        form = client.post("/", data={"question": QUESTION, "api_key": key}, headers=SITE)
        form_without = client.post("/", data={"question": QUESTION}, headers=SITE)
    assert none_yet.status_code == 503, none_yet.text
    assert "the chat needs an API key and none exists yet" in detail(none_yet)
    assert [without.status_code, wrong.status_code] == [401, 401]
    assert answered.status_code == 200, answered.text
    assert stored.status_code == 201, stored.text
    assert form.status_code == 200, form.text
    assert form_without.status_code == 401, form_without.text
    assert lxml.html.fromstring(form_without.text).get_element_by_id("form-error") is not None


def test_with_keys_the_chat_feedback_records_the_key(settings: Settings) -> None:
    import io
    import json

    from rag.feedback import export_feedback

    keyed = settings.with_(chat="keys")
    key = create_key(keyed, "reader")
    with chat(keyed) as client:
        response = client.post(
            "/chat/api/feedback", json=FEEDBACK, headers=SITE | {"authorization": f"Bearer {key}"}
        )
    assert response.status_code == 201, response.text
    out = io.StringIO()
    export_feedback(keyed, "jsonl", out)
    assert [json.loads(line)["api_key"] for line in out.getvalue().splitlines()] == ["reader"]


# Off: no chat at all.


def test_with_the_chat_off_no_chat_route_answers(settings: Settings) -> None:
    with chat(settings.with_(chat="off")) as client:
        refused = [
            client.get("/"),
            client.post("/", data={"question": QUESTION}, headers=SITE),
            client.post("/chat/api/answer", json={"question": QUESTION}, headers=SITE),
            client.post("/chat/api/feedback", json=FEEDBACK, headers=SITE),
        ]
        api = client.post("/api/answer", json={"question": QUESTION})
    assert [r.status_code for r in refused] == [404] * 4
    assert detail(refused[0]) == "the chat is off on this server; use the API under /api"
    assert api.status_code == 200, api.text
