"""Hostile input against the real app: generated requests, markup, huge and odd bodies, floods."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import lxml.html
import pytest
import schemathesis
from conftest import one_article_index
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rag.embedding import Embedder
from rag.settings import Settings
from web.app import create_app

ARTICLE = """---
title: Machine learning engineer careers
url: https://careers.example/ml-engineering/
---

## Pay

Machine learning engineers in Berlin earn about 75,000 euros a year.

## Skills

A machine learning engineer needs Python, statistics and experience deploying models.
"""


@pytest.fixture(scope="module")
def hostile_settings(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    """A one-article index: hostile input does not need the real corpus, only a real index."""
    return one_article_index(
        tmp_path_factory.mktemp("hostile"),
        ARTICLE,
        embedder,
        trusted_hosts=("127.0.0.1", "localhost", "testserver"),  # TestClient: testserver
    )


def client_for(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def hostile_client(hostile_settings: Settings) -> Iterator[TestClient]:
    with client_for(hostile_settings) as client:
        yield client


def ask(client: TestClient, **body: object) -> httpx.Response:
    return client.post("/api/answer", json={"question": "What do ML engineers earn?", **body})


def post_raw(client: TestClient, body: bytes) -> httpx.Response:
    return client.post("/api/answer", content=body, headers={"content-type": "application/json"})


def form_post(client: TestClient, **request: Any) -> httpx.Response:
    """A post to the chat's form from its page, with the page's token unless ``data`` is raw."""
    page = lxml.html.fromstring(client.get("/").text)
    token = page.xpath("//form[@id='ask']/input[@name='chat_token']/@value")[0]
    if "data" in request:
        request["data"] = request["data"] | {"chat_token": token}
    headers = {"origin": "http://testserver"} | request.pop("headers", {})
    return client.post("/", headers=headers, **request)


def assert_refused(response: httpx.Response, *statuses: int) -> None:
    """A deliberate refusal: one of ``statuses`` with a JSON ``detail`` line."""
    assert response.status_code in statuses, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail


# Generated requests: every documented operation, in-process.

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_generated_requests_never_fail_the_server_or_the_schema(
    hostile_settings: Settings,
) -> None:
    # Driven by hand rather than with schemathesis.pytest.from_fixture, which reads a
    # pytest-internal attribute that pytest 9 no longer has.
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(hostile_settings))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /api/answer",
        "GET /api/health",
        "GET /api/articles",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        call()


# Markup is data, never markup.

SCRIPT = '<script>alert("owned")</script><img src=x onerror=alert(1)>'


def test_markup_in_a_question_comes_back_as_plain_json(hostile_client: TestClient) -> None:
    response = ask(hostile_client, question=f"What do ML engineers earn? {SCRIPT}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["question"] == f"What do ML engineers earn? {SCRIPT}"


def test_markup_in_a_question_is_shown_as_text_on_the_page(hostile_client: TestClient) -> None:
    response = form_post(hostile_client, data={"question": SCRIPT, "history": [SCRIPT]})
    assert response.status_code < 500, response.text
    page = lxml.html.fromstring(response.text)
    assert not [s for s in page.iter("script") if "owned" in (s.text or "")]
    assert not page.xpath("//img[@onerror]")
    assert SCRIPT in page.text_content()


# Size and shape.


def test_a_1_mb_body_is_refused_by_its_length(hostile_client: TestClient) -> None:
    body = json.dumps({"question": "x" * 1_000_000}).encode()
    assert_refused(post_raw(hostile_client, body), 413)


def test_a_1_mb_streamed_body_is_refused_before_it_is_read_whole(
    hostile_settings: Settings,
) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"question": "'
        for n in range(1024):  # 1 MB in 1 KB chunks, without a Content-Length
            sent.append(n)
            yield b"x" * 1024
        yield b'"}'

    async def stream(app: FastAPI) -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            local = "http://localhost"
            async with httpx.AsyncClient(transport=transport, base_url=local) as client:
                return await client.post("/api/answer", content=chunks())

    response = asyncio.run(stream(create_app(hostile_settings)))
    assert_refused(response, 413)
    assert len(sent) <= hostile_settings.max_body_bytes // 1024 + 2, f"{len(sent)} KB were read"


DEEP = 20_000


@pytest.mark.parametrize(
    "body",
    [
        '{"question": ' + "[" * DEEP + "]" * DEEP + "}",
        "[" * DEEP,
        '{"question": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}",
    ],
    ids=["deep array", "deep unclosed array", "deep object"],
)
def test_deeply_nested_json_is_refused(hostile_client: TestClient, body: str) -> None:
    assert_refused(post_raw(hostile_client, body.encode()), 400, 422)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"question": "What do ML engineers earn?", "history": ["a"] * 10_000}, 422),
        ({"question": ["What do ML engineers earn?"] * 1_000}, 422),
        ([0] * 20_000, 400),
        ({"question": "What do ML engineers earn?", "history": ["a"] * 300_000}, 413),
    ],
    ids=["long history", "question as an array", "top-level array", "1 MB array"],
)
def test_huge_json_arrays_are_refused(
    hostile_client: TestClient, body: object, status: int
) -> None:
    assert_refused(post_raw(hostile_client, json.dumps(body).encode()), status)


# Unicode edge cases: answered or refused, never a server error.


@pytest.mark.parametrize(
    "question",
    [
        "What do ML engineers earn? 🤖💶",
        "🤖🤖🤖",
        "ما هو راتب مهندس التعلم الآلي؟",  # right to left
        "What do \u202eML engineers\u202c earn?",  # right-to-left override
        "What\u200b do\u200c ML\u200d engineers\ufeff earn?",  # zero-width characters
        "\u200b\u200b\u200b",  # nothing visible at all
        "Was verdienen ML-Ingenieure in Köln? e\u0301",  # combining accent
        "What do ML engineers earn?\x00\x07",  # control characters
        "𝕄𝕃 𝕖𝕟𝕘𝕚𝕟𝕖𝕖𝕣𝕤 salary",  # outside the basic plane
    ],
)
def test_unicode_questions_get_an_answer_or_a_refusal(
    hostile_client: TestClient, question: str
) -> None:
    response = ask(hostile_client, question=question)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code == 200:
        assert response.json()["question"]
    else:
        assert_refused(response, 400, 422)


@pytest.mark.parametrize(
    "body",
    [
        b'{"question": "\\ud800"}',  # a lone high surrogate
        b'{"question": "What do ML engineers earn? \\udfff"}',  # a lone low surrogate
        b'{"question": "x", "history": ["\\ud83e"]}',
        b'{"question": "\xff\xfe caf\xe9"}',  # not UTF-8
        b"\xef\xbb\xbf" + b'{"question": "What do ML engineers earn?"}',  # a byte order mark
    ],
    ids=["high surrogate", "low surrogate", "surrogate in history", "latin-1 bytes", "BOM"],
)
def test_broken_unicode_in_raw_json_is_never_a_server_error(
    hostile_client: TestClient, body: bytes
) -> None:
    response = post_raw(hostile_client, body)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert_refused(response, 400, 422)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"question=%FF%FE", "application/x-www-form-urlencoded"),  # not UTF-8
        (b"question=%ED%A0%80", "application/x-www-form-urlencoded"),  # an encoded surrogate
        (b"question=\xff\x00", "application/x-www-form-urlencoded"),
        (b"question=ok&history=%00&history=%E2%80%AE", "application/x-www-form-urlencoded"),
        (b"--x\r\n", "multipart/form-data; boundary=x"),  # a cut-off multipart body
        (b'{"question": "json to the form"}', "application/json"),
    ],
    ids=["not utf-8", "surrogate", "raw bytes", "control history", "cut multipart", "json"],
)
def test_broken_form_posts_to_the_page_are_never_a_server_error(
    hostile_client: TestClient, body: bytes, content_type: str
) -> None:
    response = form_post(hostile_client, content=body, headers={"content-type": content_type})
    # 403: a body that parses but carries no chat token is refused on the page.
    assert response.status_code in (200, 400, 403, 415, 422), response.text
    assert lxml.html.fromstring(response.text).find(".//form") is not None


# Floods: deliberate refusals with Retry-After.


def test_the_rate_limit_answers_429_with_retry_after(hostile_settings: Settings) -> None:
    with client_for(hostile_settings.with_(rate_limit_per_minute=2)) as client:
        statuses = [ask(client).status_code for _ in range(4)]
        refused = ask(client)
    assert statuses == [200, 200, 429, 429]
    assert_refused(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1


def test_a_saturated_queue_answers_503_with_retry_after(hostile_settings: Settings) -> None:
    responses: list[httpx.Response] = []
    start = threading.Barrier(8)

    def ask_at_once(client: TestClient) -> None:
        start.wait()
        responses.append(ask(client, question="What skills does a machine learning engineer need?"))

    settings = hostile_settings.with_(max_concurrency=1, max_queue=0)
    with client_for(settings) as client:
        threads = [threading.Thread(target=ask_at_once, args=(client,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert_refused(busy, 503)
    assert busy.json()["detail"] == "the server is busy; try again shortly"
    assert int(busy.headers["retry-after"]) >= 1


@pytest.mark.parametrize("origins", [(), ("https://careers.example",)])
def test_cors_is_absent_by_default_and_present_when_configured(
    hostile_settings: Settings, origins: tuple[str, ...]
) -> None:
    with client_for(hostile_settings.with_(cors_origins=origins)) as client:
        origin = {"origin": "https://careers.example"}
        preflight = client.options(
            "/api/answer", headers={**origin, "access-control-request-method": "POST"}
        )
        answer = client.post("/api/answer", json={"question": "x y z"}, headers=origin)
    expected = "https://careers.example" if origins else None
    assert answer.headers.get("access-control-allow-origin") == expected
    assert preflight.headers.get("access-control-allow-origin") == expected
    if not origins:
        assert preflight.status_code == 405


def test_the_index_folder_is_not_served(hostile_client: TestClient, tmp_path: Path) -> None:
    for path in ("/static/../index/manifest.json", "/static/%2e%2e/%2e%2e/rag/settings.py"):
        assert hostile_client.get(path).status_code == 404
