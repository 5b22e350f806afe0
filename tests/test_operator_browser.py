"""Feedback and the article picker in a real Chromium, against the app under uvicorn."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from conftest import ask_in_page as ask
from playwright.sync_api import Browser, Page, expect

from rag.feedback import export_feedback
from rag.index import Index
from rag.keys import create_key, keys_file
from rag.settings import Settings

pytestmark = pytest.mark.browser

SALARY = "How much do AI engineers earn in the US?"


@pytest.fixture(scope="module")
def settings(
    corpus_settings: Settings, corpus_index: Index, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The session's real index with this module's own data folder, API keys on.

    With a key in place the chat must still work for a visitor who has none.
    """
    settings = corpus_settings.with_(data_dir=tmp_path_factory.mktemp("browser") / "data")
    create_key(settings, "some-other-app")
    return settings


@pytest.fixture(scope="module")
def base_url(
    settings: Settings, serve: Callable[[Settings], AbstractContextManager[str]]
) -> Iterator[str]:
    with serve(settings) as url:
        yield url
    keys_file(settings).unlink(missing_ok=True)


@pytest.fixture()
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    errors: list[str] = []
    chat = browser.new_context(base_url=base_url).new_page()
    chat.on("pageerror", lambda error: errors.append(str(error)))
    chat.goto("/")
    yield chat
    chat.context.close()
    assert errors == []


def stored(settings: Settings, question: str) -> list[dict]:
    out = io.StringIO()
    export_feedback(settings, "jsonl", out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    return [row for row in rows if row["question"] == question]


def test_thumbs_up_is_confirmed_and_stored(page: Page, settings: Settings) -> None:
    question = "Which skills does an MLOps engineer need?"
    answer = ask(page, question)
    card = page.locator(".turn-answer").last
    up = card.get_by_role("button", name="Helpful", exact=True)
    down = card.get_by_role("button", name="Not helpful", exact=True)
    expect(up).to_have_attribute("aria-pressed", "false")

    with page.expect_response("**/chat/api/feedback") as response:
        up.click()
    assert response.value.status == 201, response.value.text()
    expect(card.get_by_role("status")).to_have_text("Thanks for your feedback!")
    expect(up).to_have_attribute("aria-pressed", "true")
    expect(down).to_have_attribute("aria-pressed", "false")
    expect(down).to_have_attribute("aria-disabled", "true")

    rows = stored(settings, question)
    assert len(rows) == 1
    quoted = [c for c in answer["citations"] if c["highlights"]]
    assert rows[0]["id"] == response.value.json()["id"]
    assert rows[0]["helpful"] is True
    assert rows[0]["answer"] == answer["answer"]
    assert rows[0]["passage_ids"] == [c["passage_id"] for c in quoted]
    assert rows[0]["api_key"] is None

    # One vote an answer: both buttons are now disabled, and a click sends nothing.
    expect(down).to_be_disabled()
    down.dispatch_event("click")
    page.wait_for_timeout(500)
    expect(card.get_by_role("status")).to_have_text("Thanks for your feedback!")
    assert len(stored(settings, question)) == 1


def test_thumbs_down_with_a_comment_by_keyboard(page: Page, settings: Settings) -> None:
    question = "Are certifications worth it for a career in AI?"
    ask(page, question)
    card = page.locator(".turn-answer").last
    comment = card.get_by_label("Comment, sent with your vote (optional)")
    comment.focus()
    page.keyboard.type("Too short")
    page.keyboard.press("Tab")  # to thumbs up
    page.keyboard.press("Tab")  # to thumbs down
    focused = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert focused == "Not helpful"
    with page.expect_response("**/chat/api/feedback"):
        page.keyboard.press("Enter")
    expect(card.get_by_role("status")).to_have_text("Thanks for your feedback!")
    rows = stored(settings, question)
    assert [(r["helpful"], r["comment"]) for r in rows] == [(False, "Too short")]


def test_picking_one_article_cites_only_it(page: Page) -> None:
    picker = page.locator("details.limit")
    labels = picker.locator("label.limit-option")
    assert labels.count() == 6
    picker.locator("summary").click()
    chosen = picker.locator("input[name=articles]").nth(2)
    slug = chosen.get_attribute("value")
    title = labels.nth(2).locator(".limit-title").inner_text().strip()
    chosen.check()
    expect(picker.locator(".limit-count")).to_have_text("(1 chosen)")

    with page.expect_request("**/chat/api/answer") as request:
        answer = ask(page, SALARY)
    assert request.value.post_data_json["articles"] == [slug]
    assert answer["citations"]
    assert {c["article"] for c in answer["citations"]} == {title}
    card = page.locator(".turn-answer").last
    names = card.locator(".source-article")  # some are inside the closed "Related sections"
    assert set(names.all_text_contents()) == {title}
