"""Ingest of the real feed and of small feeds, pages and Markdown files written in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rag.errors import CorpusError
from rag.ingest import Article, Section, load_corpus, read_articles

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


@pytest.fixture(scope="module")
def articles() -> list[Article]:
    return load_corpus(CORPUS)[0]


def test_the_feed_gives_six_articles_with_titles_urls_and_dates(articles: list[Article]) -> None:
    assert [(a.title, a.published[:10]) for a in articles] == [
        ("The 2025 AI Engineer Career Report: A Data-Driven Analysis", "2025-08-29"),
        ("The AI Architect in 2025: A Comprehensive Career and Market Analysis", "2025-08-28"),
        (
            "Solving the AI Talent Shortage: Innovative Strategies for Hiring AI Experts",
            "2025-07-07",
        ),
        ("Career as an AI Engineer: A Comprehensive Report", "2025-05-09"),
        (
            "The Career of an AI Architect: Scope, Description, Paths, Interviews, and Salaries",
            "2025-05-09",
        ),
        ("Top 10 AI Certifications to Land High-Paying Jobs in 2025", "2025-02-02"),
    ]
    assert articles[0].url == (
        "https://blog.9cv9.com/the-2025-ai-engineer-career-report-a-data-driven-analysis/"
    )
    assert articles[0].slug == "the-2025-ai-engineer-career-report-a-data-driven-analysis"
    assert articles[0].published == "2025-08-29T14:11:35+00:00"


def _section(articles: list[Article], anchor: str) -> Section:
    return next(s for a in articles for s in a.sections if s.anchor == anchor)


def test_sections_keep_heading_paths_and_anchors(articles: list[Article]) -> None:
    # The heading's own id is the anchor where it has one ...
    shortage = _section(articles, "Understanding-the-AI-Talent-Shortage")
    assert shortage.path == ("1. Understanding the AI Talent Shortage",)
    # ... and its sub-sections get a slug of their text and the full path.
    supply = _section(articles, "global-talent-supply-vs-demand")
    assert supply.path_text == (
        "1. Understanding the AI Talent Shortage › Global Talent Supply vs. Demand"
    )
    anchors = [s.anchor for s in articles[2].sections]
    assert len(anchors) == len(set(anchors))


def test_table_rows_repeat_their_header_cells(articles: list[Article]) -> None:
    lines = {line for a in articles for s in a.sections for line in s.lines}
    # a real <table>
    assert "Country: United States; Average Annual Salary: $134,914 – $175,262" in lines
    # a table flattened into <p> with <br>
    assert (
        "Region Entry-Level Salary Mid-Level Salary Senior-Level Salary: United States "
        "7,500–9,583 dollars/month 10,000–13,333 dollars/month 13,333–20,833+ dollars/month"
    ) in lines
    # an ASCII table in <pre>
    assert (
        "Year: 2020; AI Jobs Available: 350,000; AI Professionals: 250,000; Talent Gap: 100,000"
    ) in lines


def test_no_markup_entities_footers_or_images_remain(articles: list[Article]) -> None:
    text = "\n".join(line for a in articles for s in a.sections for line in s.lines)
    assert not re.search(r"<[a-zA-Z/][^>]*>", text)
    assert not re.search(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", text)
    assert "appeared first on" not in text
    assert "wp-content/uploads" not in text
    assert len(text.split()) > 50_000


def test_list_items_and_paragraphs_stay_separate_lines(articles: list[Article]) -> None:
    faq = _section(articles, "what-is-mlops-and-why-is-it-important")
    assert faq.path[0] == "People Also Ask"
    assert len(faq.lines) == 1 and faq.lines[0].startswith("MLOps")


def test_atom_feed(tmp_path: Path) -> None:
    feed = tmp_path / "news.atom"
    feed.write_text(
        """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
<entry><title>Prompt engineers</title><link rel="alternate" href="https://ex.org/prompt/"/>
<published>2025-03-01T10:00:00Z</published>
<content type="html">&lt;h2 id="pay"&gt;Pay&lt;/h2&gt;&lt;p&gt;Prompt engineers earn
$150,000 &amp;amp; more.&lt;/p&gt;</content></entry></feed>""",
        encoding="utf-8",
    )
    [article] = read_articles(feed)
    assert (article.title, article.url, article.published) == (
        "Prompt engineers",
        "https://ex.org/prompt/",
        "2025-03-01T10:00:00+00:00",
    )
    assert article.sections[0].anchor == "pay"
    assert article.sections[0].lines == ("Prompt engineers earn $150,000 & more.",)


def test_html_page_and_markdown(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>Data roles</title>"
        '<link rel="canonical" href="https://ex.org/data-roles"></head><body>'
        "<h2>Analysts</h2><ul><li>Query data.</li><li>Report it.</li></ul>"
        '<figure><img src="x.png"></figure></body></html>',
        encoding="utf-8",
    )
    [article] = read_articles(page)
    assert (article.title, article.url, article.slug) == (
        "Data roles",
        "https://ex.org/data-roles",
        "data-roles",
    )
    assert article.sections[0].lines == ("Query data.", "Report it.")
    note = tmp_path / "note.md"
    note.write_text(
        "---\ntitle: Interview tips\nurl: https://ex.org/tips/\ndate: 2025-01-02\n---\n"
        "## Before the day\n\nRead the job post twice.\n\n| Stage | Length |\n|---|---|\n"
        "| Screen | 30 min |\n",
        encoding="utf-8",
    )
    [article] = read_articles(note)
    assert article.title == "Interview tips" and article.published == "2025-01-02"
    assert article.sections[0].anchor == "before-the-day"
    assert article.sections[0].lines == (
        "Read the job post twice.",
        "Stage: Screen; Length: 30 min",
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.xml", b"<rss><channel><item><title>x</title></channel>", "malformed feed"),
        ("page.xml", b"<html><body>hello</body></html>", "is not an RSS 2.0 or Atom feed"),
        ("empty.rss", b'<rss version="2.0"><channel></channel></rss>', "the feed has no items"),
        ("image.html", b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "is a binary file"),
        ("latin.md", "# Caf\u00e9 pay\n\ncaf\u00e9".encode("latin-1"), "is not UTF-8 text"),
        ("blank.html", b"   \n", "is empty"),
    ],
)
def test_bad_files_are_named_with_their_problem(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CorpusError, match=re.escape(message)) as raised:
        load_corpus(tmp_path)
    assert name in str(raised.value)


def test_empty_missing_and_non_folder_corpus(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"no articles in .*add \.xml/\.rss feeds"):
        load_corpus(tmp_path)
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CorpusError, match="is not a folder"):
        load_corpus(tmp_path / "file.txt")
