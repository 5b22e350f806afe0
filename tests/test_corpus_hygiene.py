"""Corpus hygiene at ingest: dates, links, symlinks, loose text, control characters, entities."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.cli import cli
from rag.corpus import add_to_corpus
from rag.errors import CorpusError
from rag.ingest import load_corpus, read_articles
from rag.settings import Settings

BODY = "## Pay\n\nData engineers earn well.\n"


def _markdown(front: str, body: str = BODY) -> str:
    return f"---\ntitle: Data pay\n{front}---\n{body}"


def _rss(item: str, doctype: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{doctype}<rss version="2.0"><channel>'
        f"<title>t</title><item>{item}</item></channel></rss>"
    )


# Dates: every format is validated when it is read, so `published[:10]` is always a day.


@pytest.mark.parametrize("date", ["9999-99-99", "2025-02-30", "March 1, 2025", "soon", "2025"])
def test_a_markdown_date_that_is_not_a_date_is_refused(tmp_path: Path, date: str) -> None:
    (tmp_path / "pay.md").write_text(_markdown(f"date: {date}\n"), encoding="utf-8")

    with pytest.raises(CorpusError, match=re.escape(f"unreadable date {date!r}")) as raised:
        load_corpus(tmp_path)
    assert "pay.md" in str(raised.value)
    assert "YYYY-MM-DD" in str(raised.value)


@pytest.mark.parametrize(
    "head",
    [
        '<meta property="article:published_time" content="9999-99-99">',
        '<meta property="article:published_time" content="yesterday">',
    ],
)
def test_an_html_date_that_is_not_a_date_is_refused(tmp_path: Path, head: str) -> None:
    (tmp_path / "page.html").write_text(
        f"<html><head><title>Pay</title>{head}</head><body><p>Pay is good.</p></body></html>",
        encoding="utf-8",
    )

    with pytest.raises(CorpusError, match=r"page\.html: .*unreadable date"):
        load_corpus(tmp_path)


def test_a_body_time_that_is_not_a_date_is_refused(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        '<html><head><title>Pay</title></head><body><p>Updated <time datetime="99/99/9999">'
        "recently</time>.</p></body></html>",
        encoding="utf-8",
    )

    with pytest.raises(CorpusError, match=r"page\.html: .*unreadable date '99/99/9999'"):
        load_corpus(tmp_path)


@pytest.mark.parametrize(
    ("date", "published"),
    [
        ("2025-01-02", "2025-01-02"),
        ("2025-01-02 10:30", "2025-01-02T10:30:00"),
        ("2025-01-02T10:30:00Z", "2025-01-02T10:30:00+00:00"),
        ("Thu, 02 Jan 2025 10:30:00 +0000", "2025-01-02T10:30:00+00:00"),
    ],
)
def test_readable_dates_are_kept_as_iso_8601(tmp_path: Path, date: str, published: str) -> None:
    note = tmp_path / "pay.md"
    note.write_text(_markdown(f"date: {date}\n"), encoding="utf-8")

    [article] = read_articles(note)

    assert article.published == published


def test_rag_index_names_the_bad_date_in_one_line_and_builds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "pay.md").write_text(_markdown("date: 9999-99-99\n"), encoding="utf-8")

    result = CliRunner().invoke(
        cli, ["index", "--corpus", str(corpus), "--index", str(tmp_path / "index"), "--quiet"]
    )

    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "pay.md" in result.output and "'9999-99-99'" in result.output
    assert not (tmp_path / "index").exists()


# Links: only http(s) and relative URLs become citation links.

HOSTILE_URLS = [
    "javascript:alert(document.domain)",
    "JavaScript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_a_front_matter_url_that_is_not_http_is_refused(tmp_path: Path, url: str) -> None:
    (tmp_path / "pay.md").write_text(_markdown(f"url: {url}\n"), encoding="utf-8")

    with pytest.raises(CorpusError, match=r"pay\.md: .*only http\(s\) or relative links"):
        load_corpus(tmp_path)


@pytest.mark.parametrize(
    "head",
    [
        '<link rel="canonical" href="javascript:alert(1)">',
        '<link rel="canonical" href="javascript&colon;alert(1)">',
        '<meta property="og:url" content="data:text/html;base64,PHNjcmlwdD4=">',
    ],
)
def test_a_canonical_or_og_url_that_is_not_http_is_refused(tmp_path: Path, head: str) -> None:
    (tmp_path / "page.html").write_text(
        f"<html><head><title>Pay</title>{head}</head><body><p>Pay is good.</p></body></html>",
        encoding="utf-8",
    )

    with pytest.raises(CorpusError, match=r"page\.html: .*only http\(s\) or relative links"):
        load_corpus(tmp_path)


@pytest.mark.parametrize("url", ["javascript:alert(1)", " data:text/html,x"])
def test_a_feed_link_that_is_not_http_is_refused(tmp_path: Path, url: str) -> None:
    (tmp_path / "feed.xml").write_text(
        _rss(f"<title>Pay</title><link>{url}</link><description>Pay is good.</description>"),
        encoding="utf-8",
    )
    (tmp_path / "news.atom").write_text(
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><title>Pay</title>'
        f'<link href="{url}"/><content type="html">Pay is good.</content></entry></feed>',
        encoding="utf-8",
    )

    for name in ("feed.xml", "news.atom"):
        with pytest.raises(CorpusError, match=r"only http\(s\) or relative links"):
            read_articles(tmp_path / name)


@pytest.mark.parametrize(
    "url", ["https://ex.org/pay/", "http://ex.org/pay", "/corpus/pay.md", "pay.html", "//ex.org/a"]
)
def test_http_and_relative_urls_are_kept(tmp_path: Path, url: str) -> None:
    note = tmp_path / "pay.md"
    note.write_text(_markdown(f"url: {url}\n"), encoding="utf-8")

    assert read_articles(note)[0].url == url


# Symbolic links: the corpus folder's own files only.


def test_a_symlink_in_the_corpus_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "pay.md").write_text(_markdown(""), encoding="utf-8")
    secret = tmp_path / "secret.md"
    secret.write_text("# Secret\n\nThe root password is hunter2.\n", encoding="utf-8")
    (corpus / "leak.md").symlink_to(secret)

    with pytest.raises(CorpusError, match=r"leak\.md: is a symbolic link") as raised:
        load_corpus(corpus)
    assert "hunter2" not in str(raised.value)


def test_a_symlink_to_another_corpus_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "pay.md").write_text(_markdown(""), encoding="utf-8")
    (tmp_path / "copy.md").symlink_to(tmp_path / "pay.md")

    with pytest.raises(CorpusError, match=r"copy\.md: is a symbolic link"):
        load_corpus(tmp_path)


def test_a_corpus_folder_reached_through_a_symlink_still_reads(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "pay.md").write_text(_markdown(""), encoding="utf-8")
    (tmp_path / "corpus").symlink_to(real)

    articles, files = load_corpus(tmp_path / "corpus")

    assert [a.title for a in articles] == ["Data pay"] and [f.name for f in files] == ["pay.md"]


def test_rag_index_refuses_a_symlink_to_etc_passwd_in_one_line(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "pay.md").write_text(_markdown(""), encoding="utf-8")
    (corpus / "leak.md").symlink_to("/etc/passwd")

    result = CliRunner().invoke(
        cli, ["index", "--corpus", str(corpus), "--index", str(tmp_path / "index"), "--quiet"]
    )

    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "root:" not in result.output
    assert "leak.md: is a symbolic link" in result.output
    assert not (tmp_path / "index").exists()


def test_rag_add_refuses_a_symlink_and_adds_nothing(
    tiny_settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "leak.md").symlink_to("/etc/passwd")
    (tmp_path / "pay.md").write_text(_markdown(""), encoding="utf-8")

    with pytest.raises(CorpusError, match=r"leak\.md: is a symbolic link.*nothing was added"):
        add_to_corpus(tiny_settings, [tmp_path / "pay.md", tmp_path / "leak.md"])
    assert list(tiny_settings.corpus_dir.iterdir()) == []

    result = CliRunner().invoke(
        cli,
        [
            "add",
            str(tmp_path / "leak.md"),
            "--corpus",
            str(tiny_settings.corpus_dir),
            "--index",
            str(tiny_settings.index_dir),
        ],
    )
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "root:" not in result.output
    assert list(tiny_settings.corpus_dir.iterdir()) == []


def test_rag_add_refuses_to_work_on_a_corpus_holding_a_symlink(
    tiny_settings: Settings, tmp_path: Path
) -> None:
    (tiny_settings.corpus_dir / "leak.md").symlink_to("/etc/passwd")
    (tmp_path / "pay.md").write_text(_markdown(""), encoding="utf-8")

    with pytest.raises(CorpusError, match=r"leak\.md: is a symbolic link"):
        add_to_corpus(tiny_settings, [tmp_path / "pay.md"])
    assert [p.name for p in tiny_settings.corpus_dir.iterdir()] == ["leak.md"]


# Text outside block elements, and plain-text descriptions.


def _page_lines(tmp_path: Path, body: str) -> list[tuple[str, tuple[str, ...]]]:
    page = tmp_path / "page.html"
    page.write_text(f"<html><head><title>Pay</title></head><body>{body}</body></html>", "utf-8")
    return [(s.heading, s.lines) for s in read_articles(page)[0].sections]


def test_text_around_blocks_in_a_container_is_kept(tmp_path: Path) -> None:
    body = "<div>Intro about pay. <p>Para.</p>Tail after the paragraph.</div>"

    assert _page_lines(tmp_path, body) == [
        ("Pay", ("Intro about pay.", "Para.", "Tail after the paragraph."))
    ]


def test_inline_markup_in_loose_text_stays_one_line(tmp_path: Path) -> None:
    body = (
        "<div>Engineers earn <b>$150,000</b> a <a href='/y'>year</a> on average."
        "<p>Para.</p>Second<br>line</div>"
    )

    assert _page_lines(tmp_path, body) == [
        ("Pay", ("Engineers earn $150,000 a year on average.", "Para.", "Second", "line"))
    ]


def test_text_after_a_heading_belongs_to_its_section(tmp_path: Path) -> None:
    body = "<section><h2>Salaries</h2>Engineers earn $150,000.<h2>Skills</h2>Python.</section>"

    assert _page_lines(tmp_path, body) == [
        ("Salaries", ("Engineers earn $150,000.",)),
        ("Skills", ("Python.",)),
    ]


def test_an_rss_item_with_a_plain_text_description_is_read(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_text(
        _rss(
            "<title>Pay</title><link>https://ex.org/pay/</link><description>"
            "Data engineers earn well.\n\nThey need SQL &amp; Python.</description>"
        ),
        encoding="utf-8",
    )

    [article] = read_articles(feed)

    assert [s.lines for s in article.sections] == [
        ("Data engineers earn well.", "They need SQL & Python.")
    ]


# Control characters: never in titles or text.


def test_terminal_escapes_are_stripped_from_titles_and_text(tmp_path: Path) -> None:
    note = tmp_path / "pay.md"
    note.write_text(
        "---\ntitle: \x1b[2J\x1b[31mRed\x1b[0m pay\x07 \x1b]0;owned\x07report\x9b1m\n---\n"
        "## Sal\x1b[5maries\x08\n\nEngineers\x01 earn \x1b]8;;http://evil\x1b\\well\x7f.\n\n"
        "An unended \x1b]0;title keeps its text.\n",
        encoding="utf-8",
    )
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>Pay\x9b2J \x1b[1mnow</title></head><body><p>Good\x85 pay.</p>"
        "</body></html>",
        encoding="utf-8",
    )

    [md] = read_articles(note)
    [html] = read_articles(page)

    assert md.title == "Red pay report"
    assert (md.sections[0].heading, md.sections[0].lines) == (
        "Salaries",
        ("Engineers earn well.", "An unended 0;title keeps its text."),
    )
    assert html.title == "Pay now"
    assert html.sections[0].lines == ("Good pay.",)


def test_c1_controls_in_a_feed_title_are_stripped(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_text(
        _rss(
            "<title>&#x9b;31mAI&#x9b;0m careers&#x85;</title><link>https://ex.org/ai/</link>"
            "<description>&lt;p&gt;Pay is good.&lt;/p&gt;</description>"
        ),
        encoding="utf-8",
    )

    assert read_articles(feed)[0].title == "AI careers"


# Entities the parser leaves unresolved (declared in an external DTD it does not load).


def test_an_unresolved_entity_in_a_title_keeps_the_text_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_text(
        _rss(
            "<title>AI&nbsp;careers &mdash; pay &acme; in 2025</title>"
            "<link>https://ex.org/ai/</link>"
            "<description>Pay is &acme; good&hellip; really.</description>",
            doctype='<!DOCTYPE rss SYSTEM "http://ex.org/rss.dtd">',
        ),
        encoding="utf-8",
    )

    with caplog.at_level(logging.WARNING, logger="rag.ingest"):
        [article] = read_articles(feed)

    assert article.title == "AI careers \u2014 pay in 2025"
    assert article.sections[0].lines == ("Pay is good\u2026 really.",)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("feed.xml" in w and "&acme;" in w for w in warnings), warnings
