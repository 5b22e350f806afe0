"""What people expect of a chat, in a real Chromium against the app under uvicorn.

Copy, share links (with and without JavaScript), a new conversation, dark
mode, the question length limit (with and without JavaScript), nothing
fetched from another host, and a 375 px phone that never scrolls sideways.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ask_in_page as ask
from playwright.sync_api import Browser, Page, expect

from rag.analysis import MAX_QUESTION_CHARS
from rag.settings import Settings
from web.pages import too_long

pytestmark = pytest.mark.browser

SALARY = "How much do AI engineers earn in the US?"
FOLLOW_UP = "and senior ones?"
# A question of 1,919 characters: a text box with maxlength would cut it at 1,000.
LONG = ("How much do AI engineers earn in the US, and which skills matter most? " * 30)[:1918] + "?"


@pytest.fixture(scope="module")
def base_url(
    app_settings: Settings, serve: Callable[[Settings], AbstractContextManager[str]]
) -> Iterator[str]:
    with serve(app_settings) as url:
        yield url


def open_page(browser: Browser, base_url: str, path: str = "/", **options: Any) -> Page:
    options.setdefault("viewport", {"width": 1000, "height": 900})
    context = browser.new_context(base_url=base_url, **options)
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))  # type: ignore[attr-defined]
    page.goto(path)
    return page


@pytest.fixture()
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    chat = open_page(browser, base_url, permissions=["clipboard-read", "clipboard-write"])
    yield chat
    chat.context.close()
    assert chat.errors == []  # type: ignore[attr-defined]


def clipboard(page: Page) -> str:
    return page.evaluate("navigator.clipboard.readText()")


def shown_sentences(page: Page) -> list[str]:
    return page.locator(".turn-answer").last.locator(".quote .sentence").all_inner_texts()


def test_copy_puts_the_answer_with_its_numbered_sources_and_links_on_the_clipboard(
    page: Page,
) -> None:
    answer = ask(page, SALARY)
    assert answer["answered"] is True
    card = page.locator(".turn-answer").last
    card.get_by_role("button", name="Copy").click()
    expect(card.locator(".action-status")).to_have_text("Answer copied")
    used = [c for c in answer["citations"] if c["highlights"]]
    sources = [f"[{c['n']}] {c['article']} › {c['section']}\n    {c['url']}" for c in used]
    assert clipboard(page) == "\n".join([answer["answer"], "", "Sources:", *sources])


def test_share_link_with_javascript_is_copied_and_opens_the_answer(
    page: Page, browser: Browser, base_url: str
) -> None:
    ask(page, SALARY)
    ask(page, FOLLOW_UP)
    expected = shown_sentences(page)
    card = page.locator(".turn-answer").last
    card.get_by_role("link", name="Link to this answer").click()
    expect(card.locator(".action-status")).to_have_text("Link copied")
    link = clipboard(page)
    assert urlsplit(link)[:3] == (*urlsplit(base_url)[:2], "/")
    assert page.url.rstrip("/") == base_url  # copied, not followed

    friend = open_page(browser, base_url, link)
    try:
        # The follow-up's link carries its conversation: both turns, answered as before.
        expect(friend.locator(".turn-user .question")).to_have_text(
            [f"You asked: {SALARY}", f"You asked: {FOLLOW_UP}"]
        )
        assert shown_sentences(friend) == expected
        assert friend.errors == []  # type: ignore[attr-defined]
    finally:
        friend.context.close()


def test_share_link_without_javascript_is_rendered_by_the_server(
    browser: Browser, base_url: str
) -> None:
    page = open_page(browser, base_url, java_script_enabled=False)
    try:
        page.get_by_label("Your question").fill(SALARY)
        with page.expect_navigation():
            page.get_by_role("button", name="Ask").click()
        expected = shown_sentences(page)
        assert expected
        share = page.get_by_role("link", name="Link to this answer")
        assert share.get_attribute("href") == "/?q=How+much+do+AI+engineers+earn+in+the+US%3F"
        with page.expect_navigation():
            share.click()
        expect(page.locator(".turn-user .question")).to_have_text([f"You asked: {SALARY}"])
        assert shown_sentences(page) == expected
    finally:
        page.context.close()


def test_without_javascript_the_whole_conversation_stays_on_the_page(
    browser: Browser, base_url: str
) -> None:
    page = open_page(browser, base_url, java_script_enabled=False)
    try:
        for question in (SALARY, FOLLOW_UP, "Which skills does an MLOps engineer need?"):
            page.get_by_label("Your question").fill(question)
            with page.expect_navigation():
                page.get_by_role("button", name="Ask").click()
        expect(page.locator(".turn-answer")).to_have_count(3)
        expect(page.locator(".turn-answer").first.locator(".quote").first).to_be_visible()
    finally:
        page.context.close()


def test_new_conversation_forgets_the_earlier_questions(page: Page) -> None:
    new = page.get_by_role("link", name="New conversation")
    expect(new).to_be_hidden()  # nothing to forget yet
    ask(page, SALARY)
    ask(page, FOLLOW_UP)
    with page.expect_navigation():
        new.click()
    expect(page.locator(".turn")).to_have_count(0)
    with page.expect_request("**/chat/api/answer") as request:
        ask(page, FOLLOW_UP)
    assert request.value.post_data_json == {"question": FOLLOW_UP, "history": []}
    expect(page.locator(".turn-user .question")).to_have_text([f"You asked: {FOLLOW_UP}"])


def luminance(css_colour: str) -> float:
    """Relative luminance (WCAG) of an ``rgb(...)`` colour."""
    red, green, blue = (int(v) / 255 for v in re.findall(r"\d+", css_colour)[:3])
    linear = [
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colours_follow_the_system_setting_and_stay_readable(
    browser: Browser, base_url: str, scheme: str
) -> None:
    page = open_page(browser, base_url, color_scheme=scheme)
    try:
        ask(page, SALARY)
        page.locator(".turn-answer .cite summary").first.click()
        colour = "el => getComputedStyle(el).color"
        background = "el => getComputedStyle(el).backgroundColor"
        paper = page.locator("body").evaluate(background)
        assert (luminance(paper) < 0.05) == (scheme == "dark"), paper
        card = page.locator(".turn-answer .answer")
        pairs = [
            (page.locator(".turn-answer .sentence").first, card),
            (page.locator(".turn-user .question"), page.locator(".turn-user .question")),
            (page.locator(".turn-answer mark").first, page.locator(".turn-answer mark").first),
            (page.get_by_label("Your question"), page.get_by_label("Your question")),
        ]
        for text, behind in pairs:
            ratio = contrast(text.evaluate(colour), behind.evaluate(background))
            assert ratio >= 4.5, (scheme, text, ratio)
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        page.context.close()


def test_over_long_question_with_javascript_is_explained_and_kept_whole(page: Page) -> None:
    box = page.get_by_label("Your question")
    box.fill("x" * (MAX_QUESTION_CHARS - 40))
    expect(page.locator("#count")).to_have_text("40 characters left")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/answer" in r.url else None)
    box.fill(LONG)
    assert box.input_value() == LONG  # nothing cut
    expect(page.locator("#count")).to_have_text(f"{len(LONG):,} / {MAX_QUESTION_CHARS:,}")
    expect(page.get_by_role("alert")).to_have_text(too_long(len(LONG)))
    box.press("Enter")
    expect(page.get_by_role("alert")).to_have_text(too_long(len(LONG)))
    assert box.input_value() == LONG
    assert sent == []
    expect(page.locator(".turn")).to_have_count(0)
    box.fill(SALARY)
    expect(page.get_by_role("alert")).to_be_hidden()


def test_over_long_question_without_javascript_gets_the_same_message(
    browser: Browser, base_url: str
) -> None:
    page = open_page(browser, base_url, java_script_enabled=False)
    try:
        box = page.get_by_label("Your question")
        box.fill(LONG)
        assert box.input_value() == LONG  # nothing cut
        with page.expect_navigation() as navigation:
            page.get_by_role("button", name="Ask").click()
        assert navigation.value is not None and navigation.value.status == 400
        expect(page.get_by_role("alert")).to_have_text(too_long(len(LONG)))
        assert page.get_by_label("Your question").input_value() == LONG
        expect(page.locator("#count")).to_have_text(f"{len(LONG):,} / {MAX_QUESTION_CHARS:,}")
    finally:
        page.context.close()


def test_nothing_is_fetched_from_another_host(browser: Browser, base_url: str) -> None:
    context = browser.new_context(base_url=base_url)
    server = urlsplit(base_url).netloc
    requests: list[str] = []
    refused: list[str] = []
    documents: dict[str, str | None] = {}
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    page.on(
        "response",
        lambda r: (
            documents.update({r.url: r.headers.get("content-security-policy")})
            if r.request.resource_type == "document"
            else None
        ),
    )
    try:
        page.goto("/")
        ask(page, SALARY)
        chip = page.locator(".turn-answer .cite").first
        chip.locator("summary").click()
        expect(chip.locator("mark").first).to_be_visible()
        page.locator(".turn-answer details.related summary").first.click()
        page.goto("/?q=What+is+MLOps%3F")
        expect(page.locator(".turn-answer")).to_have_count(1)
        page.goto("/docs")
        # Swagger UI has drawn the API: its operations come from /openapi.json.
        expect(page.locator(".opblock")).to_have_count(4)
        page.locator(".opblock-summary").first.click()
        expect(page.locator(".opblock-body").first).to_be_visible()
        page.goto("/openapi.json")

        elsewhere = [url for url in requests if urlsplit(url).netloc != server]
        assert elsewhere == []
        assert any(urlsplit(url).path.startswith("/docs/assets/") for url in requests)
        assert refused == []
        assert len(documents) == 4
        for url, policy in documents.items():
            assert policy is not None and "default-src 'self'" in policy, url
    finally:
        context.close()


def test_a_375_px_phone_never_scrolls_sideways(browser: Browser, base_url: str) -> None:
    phone = open_page(
        browser, base_url, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    width = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    try:
        scroll_width, client_width = phone.evaluate(width)
        assert scroll_width <= client_width == 375
        ask(phone, SALARY)
        ask(phone, "What does " + "supercalifragilistic" * 4 + " mean for MLOps engineers?")
        phone.locator(".turn-answer .cite summary").first.click()
        phone.locator(".turn-answer details.related summary").first.click()
        picker = phone.locator("details.limit")
        picker.locator("summary").click()
        scroll_width, client_width = phone.evaluate(width)
        assert scroll_width <= client_width == 375
        # The open picker stays compact: the question box and Ask stay on screen beside it.
        assert picker.bounding_box()["height"] <= 740 / 3  # type: ignore[index]
        for control in (
            phone.get_by_label("Your question"),
            phone.get_by_role("button", name="Ask"),
        ):
            expect(control).to_be_in_viewport()
        phone.goto("/docs")
        expect(phone.locator(".opblock")).to_have_count(4)
        assert phone.errors == []  # type: ignore[attr-defined]
    finally:
        phone.context.close()


def test_article_picker_shows_distinct_titles_with_their_dates(page: Page) -> None:
    page.locator("details.limit summary").click()
    options = page.locator("label.limit-option")
    texts = [" ".join(t.split()) for t in options.all_inner_texts()]
    assert len(texts) == 6 and len(set(texts)) == 6
    dates = page.locator("label.limit-option time").all_inner_texts()
    assert len(dates) == 6
    assert all(re.fullmatch(r"\d{1,2} [A-Z][a-z]{2} \d{4}", d) for d in dates), dates
