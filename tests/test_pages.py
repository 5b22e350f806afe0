"""The chat's pages as HTML: one template for an answer, the length limit, the security headers."""

from __future__ import annotations

from collections.abc import Iterator

import lxml.html
import pytest
from fastapi.testclient import TestClient

from rag.analysis import MAX_QUESTION_CHARS
from rag.settings import Settings
from web.app import create_app
from web.pages import too_long

SALARY = "How much do AI engineers earn in the US?"
FOLLOW_UP = "and senior ones?"


@pytest.fixture(scope="module")
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


SITE = {"origin": "http://testserver"}  # the chat's posts must come from its own page


def token_of(client: TestClient) -> str:
    """The chat token the page embeds, which the page's posts send back."""
    page = lxml.html.fromstring(client.get("/").text)
    return page.xpath("//meta[@name='chat-token']/@content")[0]


def from_page(client: TestClient) -> dict[str, str]:
    """The headers the page's script sends with its posts."""
    return SITE | {"x-chat-token": token_of(client)}


def without_timing(card: lxml.html.HtmlElement) -> str:
    """The answer's HTML less the time it took, which differs from one answer to the next."""
    for meta in card.xpath(".//*[@class='meta']"):
        meta.text = ""
    card.tail = None  # the whitespace after it in the page
    return lxml.html.tostring(card, encoding="unicode")


def test_the_script_inserts_the_html_the_page_renders(client: TestClient) -> None:
    fragment = client.post(
        "/chat/api/answer",
        json={"question": FOLLOW_UP, "history": [SALARY]},
        headers={"Accept": "text/html"} | from_page(client),
    )
    assert fragment.status_code == 200, fragment.text
    assert fragment.headers["content-type"].startswith("text/html")
    inserted = lxml.html.fragment_fromstring(fragment.text)

    page = client.get("/", params={"q": FOLLOW_UP, "history": [SALARY]})
    assert page.status_code == 200, page.text
    cards = lxml.html.fromstring(page.text).xpath("//li[contains(@class, 'turn-answer')]")
    assert len(cards) == 2  # the earlier question is answered again
    assert without_timing(inserted) == without_timing(cards[-1])
    assert inserted.xpath(".//a[@class='action share']/@href") == [
        "/?q=and+senior+ones%3F&history=How+much+do+AI+engineers+earn+in+the+US%3F"
    ]


def test_without_accept_html_the_chat_route_still_answers_json(client: TestClient) -> None:
    reply = client.post("/chat/api/answer", json={"question": SALARY}, headers=from_page(client))
    assert reply.status_code == 200, reply.text
    assert reply.json()["question"] == SALARY


@pytest.mark.parametrize("length", [MAX_QUESTION_CHARS + 1, 1919])
def test_over_long_form_post_keeps_the_question_whole_with_a_plain_message(
    client: TestClient, length: int
) -> None:
    question = ("What do AI engineers earn? " * 80)[: length - 1] + "?"
    form = {"question": question, "chat_token": token_of(client)}
    response = client.post("/", data=form, headers=SITE)
    assert response.status_code == 400, response.text
    page = lxml.html.fromstring(response.text)
    (alert,) = page.xpath("//*[@role='alert']")
    assert alert.text_content() == too_long(length)
    assert page.xpath("//textarea[@id='question']")[0].text_content() == question
    assert page.xpath("//textarea[@id='question']/@maxlength") == []  # it would cut silently


def test_the_message_is_plain_language() -> None:
    assert too_long(1919) == (
        "Your question is 1,919 characters long; questions can be at most 1,000. "
        "Please shorten it by 919 characters."
    )


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/?q=What+is+MLOps%3F",
        "/docs",
        "/openapi.json",
        "/static/chat.js",
        "/docs/assets/swagger-ui-bundle.js",
        "/api/health",
        "/no-such-page",
    ],
)
def test_every_response_says_nothing_is_loaded_from_elsewhere(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    policy = response.headers.get("content-security-policy", "")
    assert "default-src 'self'" in policy.split(";")[0], (path, policy)
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


@pytest.mark.parametrize("path", ["/", "/?q=What+is+MLOps%3F", "/docs"])
def test_pages_hold_no_inline_script_no_handler_and_no_link_to_a_cdn(
    client: TestClient, path: str
) -> None:
    page = lxml.html.fromstring(client.get(path).text)
    scripts = page.xpath("//script")
    assert scripts and all(s.get("src", "").startswith("/") for s in scripts)
    assert all(not (s.text or "").strip() for s in scripts)
    handlers = [a for e in page.iter() for a in e.attrib if a.lower().startswith("on")]
    assert handlers == []
    assert page.xpath("//*[@style]") == []
    loaded = page.xpath("//link/@href | //script/@src | //img/@src")
    assert all(url.startswith("/") and not url.startswith("//") for url in loaded), loaded


def test_docs_serve_swagger_ui_from_installed_files(client: TestClient) -> None:
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 100_000, asset
    assert client.get("/redoc").status_code == 404
