"""Quotes a person can read: table rows and list items as whole units with their structure,
from ingest through chunking to the answer's `quotes` and the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.answering import Answer, answer_question
from rag.chunking import chunk_articles
from rag.embedding import Embedder
from rag.index import Index
from rag.ingest import Article, read_articles
from rag.settings import Settings
from web.app import create_app

TABLE_PAGE = """<html><head><title>Pay by country</title></head><body>
<h2 id="pay">Pay by country</h2>
<p>The table below compares average pay.</p>
<table>
<tr><th>Country</th><th>Average Salary (USD)</th><th>Notes</th></tr>
<tr><td>United States</td><td>Avg. $185,833 (Built In)</td><td>Highest. Paid well.</td></tr>
<tr><td>Canada</td><td>$77,000</td><td></td></tr>
</table>
<h2>Skills</h2>
<p>Key skills include:</p>
<ul><li>Python. It is used everywhere.</li><li>Cloud computing</li></ul>
<p>A long paragraph that stands on its own and says a great deal about many things before
any list begins, far more than a title would ever say about what follows it here.</p>
<ul><li>Kubernetes</li></ul>
<h2>Tools</h2>
<pre>
| Tool | Use |
|------|-----|
| MLflow | tracking |
| Airflow | scheduling |
| Kafka | streaming |
</pre>
<pre>
Job Demand Index
2023 | ████████  (Baseline)
2024 | ███████████████  (Rapid growth)
2025 | ██████████████████████  (Exceeding +109%)
</pre>
<p>Role Focus Salary<br>AI Engineer Models $150,000<br>AI Architect Systems $200,000</p>
</body></html>
"""


@pytest.fixture()
def article(tmp_path: Path) -> Article:
    path = tmp_path / "pay.html"
    path.write_text(TABLE_PAGE, encoding="utf-8")
    return read_articles(path)[0]


def _shapes(article: Article) -> list[tuple[str, str, object]]:
    return [
        (line, shape.kind, shape.cells or shape.intro)
        for section in article.sections
        for line, shape in zip(section.lines, section.shapes, strict=True)
    ]


def test_table_rows_keep_their_cells_and_are_never_split(
    article: Article, tiny_settings: Settings
) -> None:
    rows = {line: cells for line, kind, cells in _shapes(article) if kind == "table_row"}
    us = (
        "Country: United States; Average Salary (USD): Avg. $185,833 (Built In); "
        "Notes: Highest. Paid well."
    )
    assert rows[us] == (
        ("Country", "United States"),
        ("Average Salary (USD)", "Avg. $185,833 (Built In)"),
        ("Notes", "Highest. Paid well."),
    )
    # An empty cell is left out, not given an empty value.
    assert rows["Country: Canada; Average Salary (USD): $77,000"] == (
        ("Country", "Canada"),
        ("Average Salary (USD)", "$77,000"),
    )
    assert rows["Tool: MLflow; Use: tracking"] == (("Tool", "MLflow"), ("Use", "tracking"))
    # A <br>-flattened table gives no cell boundaries: each row stays whole under its header.
    assert rows["Role Focus Salary: AI Engineer Models $150,000"] == (
        ("Role Focus Salary", "AI Engineer Models $150,000"),
    )
    # A bar chart drawn in text has no header row: nothing is made a column name.
    assert not any("2023" in line for line in rows)
    units = [p.text[a:b] for p in chunk_articles([article], tiny_settings) for a, b in p.sentences]
    assert us in units  # "Avg." and "Highest." do not cut the row


def test_list_items_are_whole_units_with_the_line_that_introduces_them(
    article: Article, tiny_settings: Settings
) -> None:
    items = {line: intro for line, kind, intro in _shapes(article) if kind == "list_item"}
    assert items == {
        "Python. It is used everywhere.": "Key skills include:",
        "Cloud computing": "Key skills include:",
        "Kubernetes": "",  # a paragraph of its own does not introduce the list after it
    }
    passages = chunk_articles([article], tiny_settings)
    shapes = {
        p.text[a:b]: s for p in passages for (a, b), s in zip(p.sentences, p.shapes, strict=True)
    }
    assert shapes["Python. It is used everywhere."].kind == "list_item"
    assert shapes["The table below compares average pay."].kind == "sentence"


def _ask(index: Index, embedder: Embedder, question: str) -> Answer:
    return answer_question(index, embedder, question)


def _check_verbatim(result: Answer) -> None:
    citations = {c.n: c for c in result.citations}
    for quote in result.quotes:
        citation = citations[quote.citation]
        start, end = quote.span
        assert citation.text[start:end] == quote.text
        assert quote.span in citation.highlights
        assert quote.text in result.answer


@pytest.mark.parametrize(
    "question",
    [
        "What is the average AI engineer salary in Canada?",
        "Which skills does an MLOps engineer need?",
        "What certifications should an AI engineer get?",
        "What does an AI architect do?",
    ],
)
def test_quotes_are_verbatim_units_of_their_citations(
    corpus_index: Index, embedder: Embedder, question: str
) -> None:
    result = _ask(corpus_index, embedder, question)
    assert result.answered
    assert result.quotes
    _check_verbatim(result)
    for quote in result.quotes:
        assert quote.kind in ("sentence", "table_row", "list_item")
        assert not quote.text.startswith((";", ",", ":"))
        if quote.kind == "table_row":
            assert quote.cells
            assert all(value in quote.text for _, value in quote.cells)
    assert len({q.text for q in result.quotes}) == len(result.quotes)


def test_a_table_question_quotes_whole_rows_with_cells(
    corpus_index: Index, embedder: Embedder
) -> None:
    result = _ask(corpus_index, embedder, "What is the average AI engineer salary in Canada?")
    rows = [q for q in result.quotes if q.kind == "table_row"]
    assert rows, result.answer
    assert any(("Country", "Canada") in q.cells for q in rows), rows


def test_a_declined_question_has_no_quotes(corpus_index: Index, embedder: Embedder) -> None:
    result = _ask(corpus_index, embedder, "What is the best pizza topping in Naples?")
    assert not result.answered
    assert result.quotes == ()


@pytest.fixture(scope="module")
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


def test_the_api_returns_quotes_in_the_documented_shape(client: TestClient) -> None:
    body = client.post(
        "/api/answer", json={"question": "What is the average AI engineer salary in Canada?"}
    ).json()
    assert body["answered"], body
    passages = {c["n"]: c["text"] for c in body["citations"]}
    for quote in body["quotes"]:
        assert set(quote) >= {"citation", "kind", "text", "span", "section", "needs_section"}
        start, end = quote["span"]
        assert passages[quote["citation"]][start:end] == quote["text"]
        assert ("cells" in quote) == (quote["kind"] == "table_row")
        assert ("intro" in quote) == (quote["kind"] == "list_item")
        if quote["kind"] == "table_row":
            assert all(isinstance(h, str) and isinstance(v, str) for h, v in quote["cells"])
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"citation", "kind", "text", "span", "section"} <= set(schema["QuoteOut"]["properties"])
    assert schema["QuoteOut"]["properties"]["kind"]["enum"] == [
        "sentence",
        "table_row",
        "list_item",
    ]
    declined = client.post(
        "/api/answer", json={"question": "What is the best pizza topping in Naples?"}
    ).json()
    assert declined["quotes"] == []


def test_the_example_questions_answer_with_whole_readable_units(
    corpus_index: Index, embedder: Embedder
) -> None:
    from rag.scoring import is_label
    from web.pages import EXAMPLES

    for question in EXAMPLES:
        result = _ask(corpus_index, embedder, question)
        assert result.answered, question
        assert result.quotes, question
        _check_verbatim(result)
        for quote in result.quotes:
            # Never half a row, a heading, a bare label or the text's own question.
            assert not quote.text.startswith((";", ",", ":")), quote
            assert not quote.text.endswith("?"), quote
            assert quote.text.endswith(":") or not is_label(quote.text), quote
            if quote.kind == "table_row":
                assert quote.cells, quote
        assert len({q.text for q in result.quotes}) == len(result.quotes), question
