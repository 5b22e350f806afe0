"""The chat in a real Chromium: the app runs under uvicorn on a free localhost port."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ask_in_page as ask
from playwright.sync_api import Browser, Page, expect

from rag.settings import Settings

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SALARY = "How much do AI engineers earn in the US?"
OFF_TOPIC = "What is the best pizza topping in Naples?"


@pytest.fixture(scope="module")
def base_url(
    app_settings: Settings, serve: Callable[[Settings], AbstractContextManager[str]]
) -> Iterator[str]:
    """The real app served by uvicorn in a thread, once its index has loaded."""
    with serve(app_settings) as url:
        yield url


@dataclass
class Watch:
    """What a page did that a test must see: script errors and dialogs (e.g. ``alert``)."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def open_chat(browser: Browser, base_url: str, watch: Watch, **options: Any) -> Page:
    """A fresh browser context on the chat, reporting errors and dialogs to ``watch``."""
    page = browser.new_context(base_url=base_url, **options).new_page()
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    page.on("dialog", lambda dialog: (watch.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto("/")
    return page


@pytest.fixture()
def watch() -> Watch:
    return Watch()


@pytest.fixture()
def page(browser: Browser, base_url: str, watch: Watch) -> Iterator[Page]:
    chat = open_chat(browser, base_url, watch, viewport={"width": 1000, "height": 900})
    yield chat
    chat.context.close()
    assert watch.errors == []


def test_answer_with_a_chip_that_opens_the_highlighted_passage(page: Page) -> None:
    # Record the loading indicator's states: shown while waiting, hidden after.
    page.evaluate(
        """() => {
        window.loadingStates = [];
        const loading = document.getElementById("loading");
        new MutationObserver(() => window.loadingStates.push(loading.hidden))
            .observe(loading, {attributes: true, attributeFilter: ["hidden"]});
        }"""
    )
    answer = ask(page, SALARY)
    assert answer["answered"] is True
    assert page.evaluate("window.loadingStates") == [False, True]
    assert page.get_by_label("Your question").evaluate("box => box === document.activeElement")

    first = next(c for c in answer["citations"] if c["highlights"])
    start, end = first["highlights"][0]
    card = page.locator(".turn-answer").last
    expect(card.locator(".quote .sentence").first).to_have_text(first["text"][start:end])
    chip = card.locator(".cite").first
    expect(chip.locator("summary")).to_have_text(str(first["n"]))
    link = chip.locator(".passage-link")
    expect(link).to_be_hidden()
    assert link.get_attribute("href") == first["url"]
    assert (link.get_attribute("target"), link.get_attribute("rel")) == ("_blank", "noopener")

    chip.locator("summary").click()
    expect(chip.locator("mark").first).to_be_visible()
    expect(chip.locator("mark").first).to_have_text(first["text"][start:end])
    expect(link).to_be_visible()
    expect(card.locator(".meta")).to_have_text(re.compile(r"^\d+ ms$"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

    # The chip also opens and closes from the keyboard.
    chip.locator("summary").focus()
    page.keyboard.press("Enter")
    expect(chip.locator("mark").first).to_be_hidden()


def test_follow_up_sends_the_earlier_questions_as_history(page: Page) -> None:
    ask(page, SALARY)
    with page.expect_request("**/api/answer") as request:
        ask(page, "and senior ones?")
    assert request.value.post_data_json == {"question": "and senior ones?", "history": [SALARY]}
    expect(page.locator(".turn-user .question")).to_have_text(
        [f"You asked: {SALARY}", "You asked: and senior ones?"]
    )


def test_declined_question_shows_the_closest_sections(page: Page) -> None:
    answer = ask(page, OFF_TOPIC)
    assert answer["answered"] is False
    card = page.locator(".turn-answer").last
    expect(card.locator(".declined-text")).to_contain_text("The articles don't")
    expect(card.locator(".sources-title")).to_have_text("Closest sections")
    expect(card.locator(".sources a.source")).to_have_count(len(answer["citations"]))


def test_script_in_a_question_is_shown_as_text(page: Page, watch: Watch) -> None:
    question = "<script>alert(1)</script><img src=x onerror=alert(2)> AI salary"
    ask(page, question)
    expect(page.locator(".turn-user .question").last).to_have_text(f"You asked: {question}")
    assert page.locator("#transcript script, #transcript img").count() == 0
    assert watch.dialogs == []


def test_example_questions_are_clickable(page: Page) -> None:
    example = page.locator("#examples button").first
    text = example.inner_text()
    with page.expect_request("**/api/answer") as request:
        example.click()
    assert request.value.post_data_json == {"question": text, "history": []}
    expect(page.locator(".turn-answer")).to_have_count(1)
    expect(page.locator(".turn-user .question")).to_have_text([f"You asked: {text}"])
    expect(page.locator("#examples")).to_have_count(0)


def test_empty_question_is_refused_in_place(page: Page) -> None:
    page.get_by_label("Your question").press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Type a question first.")
    expect(page.locator(".turn")).to_have_count(0)


def test_keyboard_only_use(page: Page) -> None:
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.className")
    assert focused == "example"
    page.keyboard.press("Enter")
    expect(page.locator(".turn-answer")).to_have_count(1)
    # Focus returns to the question box, so the next question can be typed at once.
    page.keyboard.type("and senior ones?")
    page.keyboard.press("Enter")
    expect(page.locator(".turn-answer")).to_have_count(2)


def test_chat_fits_a_375_px_phone(browser: Browser, base_url: str, watch: Watch) -> None:
    phone = open_chat(
        browser, base_url, watch, viewport={"width": 375, "height": 740}, is_mobile=True
    )
    try:
        ask(phone, SALARY)
        phone.locator(".turn-answer .cite summary").first.click()
        widths = phone.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1] == 375
        for control in (
            phone.get_by_label("Your question"),
            phone.get_by_role("button", name="Ask"),
        ):
            expect(control).to_be_in_viewport()
            box = control.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
        ARTIFACTS.mkdir(exist_ok=True)
        phone.screenshot(path=str(ARTIFACTS / "chat-375.png"), full_page=True)
        assert watch.errors == []
    finally:
        phone.context.close()


def test_form_works_without_javascript(browser: Browser, base_url: str, watch: Watch) -> None:
    page = open_chat(browser, base_url, watch, java_script_enabled=False)
    try:
        page.get_by_label("Your question").fill(SALARY)
        with page.expect_navigation():
            page.get_by_role("button", name="Ask").click()
        expect(page.locator(".turn-answer .answer")).to_have_attribute("data-answered", "true")
        chip = page.locator(".turn-answer .cite").first
        chip.locator("summary").click()
        expect(chip.locator("mark").first).to_be_visible()

        page.get_by_label("Your question").fill("and senior ones?")
        with page.expect_navigation():
            page.get_by_role("button", name="Ask").click()
        expect(page.locator(".turn-user .question")).to_have_text(
            [f"You asked: {SALARY}", "You asked: and senior ones?"]
        )
        # The earlier answer stays on the page: the server answers it again.
        expect(page.locator(".turn-answer")).to_have_count(2)
        hidden = page.locator("#ask input[name=history]")
        assert [hidden.nth(i).get_attribute("value") for i in range(hidden.count())] == [
            SALARY,
            "and senior ones?",
        ]
    finally:
        page.context.close()


def test_example_questions_work_without_javascript(
    browser: Browser, base_url: str, watch: Watch
) -> None:
    page = open_chat(browser, base_url, watch, java_script_enabled=False)
    try:
        example = page.locator("#examples button").first
        text = example.inner_text()
        with page.expect_navigation():
            example.click()
        expect(page.locator(".turn-user .question")).to_have_text([f"You asked: {text}"])
        expect(page.locator(".turn-answer")).to_have_count(1)
        expect(page.locator("#examples")).to_have_count(0)
    finally:
        page.context.close()
