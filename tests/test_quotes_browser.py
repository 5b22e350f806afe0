"""Structured quotes in a real Chromium: table rows as one table, list items under their
introduction, at desktop width and on a 375 px phone, with JavaScript and without."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, expect

from rag.settings import Settings

pytestmark = pytest.mark.browser

TABLE = "What is the average AI engineer salary in Canada?"
LIST = "How can a software developer move into machine learning?"
WIDTH = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"


@pytest.fixture(scope="module")
def base_url(
    app_settings: Settings, serve: Callable[[Settings], AbstractContextManager[str]]
) -> Iterator[str]:
    with serve(app_settings) as url:
        yield url


def _open(browser: Browser, base_url: str, width: int, javascript: bool = True) -> Page:
    context = browser.new_context(
        base_url=base_url,
        viewport={"width": width, "height": 800},
        java_script_enabled=javascript,
        is_mobile=width < 500,
        has_touch=width < 500,
    )
    return context.new_page()


def _ask(page: Page, question: str) -> None:
    page.goto("/")
    page.get_by_label("Your question").fill(question)
    page.get_by_label("Your question").press("Enter")
    expect(page.locator(".turn-answer")).to_have_count(1)


@pytest.mark.parametrize("width", [1000, 375])
def test_table_rows_are_shown_as_one_table_with_its_header(
    browser: Browser, base_url: str, width: int
) -> None:
    page = _open(browser, base_url, width)
    try:
        _ask(page, TABLE)
        # The rows quoted from one table stand in one table (another passage's, another).
        table = page.locator(".turn-answer .quote-table table").filter(has_text="Canada")
        expect(table).to_have_count(1)
        assert "Country" in table.locator("thead th").all_inner_texts()
        rows = table.locator("tbody tr")
        assert any("Canada" in r for r in rows.all_inner_texts())
        # Each row's cells stand in their own columns, under the header's.
        assert rows.first.locator("td").count() == table.locator("thead th").count()
        page.locator(".turn-answer .quote-table .cite summary").first.click()
        expect(page.locator(".turn-answer .quote-table .passage mark").first).to_be_visible()
        scroll_width, client_width = page.evaluate(WIDTH)
        assert scroll_width <= client_width == width  # a wide table scrolls inside itself
    finally:
        page.context.close()


def test_list_items_are_shown_under_their_introduction(browser: Browser, base_url: str) -> None:
    page = _open(browser, base_url, 1000)
    try:
        _ask(page, LIST)
        block = page.locator(".turn-answer .quote-list").first
        expect(block.locator(".quote-intro")).to_have_text(
            "The CAIP program caters to a diverse audience, making it an ideal choice for:"
        )
        items = block.locator("li .sentence").all_inner_texts()
        assert any(item.startswith("Software Developers:") for item in items), items
        expect(block.locator("li .chip").first).to_be_visible()
    finally:
        page.context.close()


def test_without_javascript_the_same_table_is_rendered_by_the_server(
    browser: Browser, base_url: str
) -> None:
    page = _open(browser, base_url, 375, javascript=False)
    try:
        page.goto("/?" + urlencode({"q": TABLE}))
        table = page.locator(".turn-answer .quote-table table").filter(has_text="Canada")
        expect(table).to_have_count(1)
        assert any("Canada" in r for r in table.locator("tbody tr").all_inner_texts())
        scroll_width, client_width = page.evaluate(WIDTH)
        assert scroll_width <= client_width == 375
    finally:
        page.context.close()
