"""Corpus management: add, remove and list articles, with rebuilds that undo a failed change."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.chunking import chunk_articles
from rag.cli import cli
from rag.corpus import (
    add_articles,
    add_to_corpus,
    apply_change,
    list_articles,
    remove_from_corpus,
)
from rag.embedding import Embedder
from rag.errors import CorpusError, SettingsError
from rag.index import build_index
from rag.ingest import Article, load_corpus, read_articles
from rag.settings import Settings


def _markdown(slug: str, title: str, topic: str) -> str:
    return (
        f"---\ntitle: {title}\nurl: https://blog.example.com/{slug}/\n"
        f"date: 2025-03-0{len(slug) % 9 or 9}\n---\n\n# {title}\n\n## Why {topic} matters\n\n"
        f"Engineers who learn {topic} early are hired faster. Teams value {topic} in interviews."
        f"\n\n## How to start with {topic}\n\n"
        f"Start with one small project about {topic}. Share it with a mentor and ask for review.\n"
    )


def _rss(*slugs: str) -> str:
    items = "".join(
        f"""
  <item>
    <title>{slug.replace("-", " ").title()}</title>
    <link>https://blog.example.com/{slug}/</link>
    <pubDate>Fri, 29 Aug 2025 14:11:35 +0000</pubDate>
    <content:encoded><![CDATA[<h2>About {slug}</h2><p>The article {slug} explains a career
    step in detail. It gives <b>three</b> tips for {slug}.</p>]]></content:encoded>
  </item>"""
        for slug in slugs
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">\n<channel>\n'
        f"  <title>Career blog</title>{items}\n</channel>\n</rss>\n"
    )


def _atom(*slugs: str) -> str:
    entries = "".join(
        f"""
  <entry>
    <title>{slug}</title>
    <link rel="alternate" href="https://atom.example.com/{slug}"/>
    <updated>2025-01-02T03:04:05Z</updated>
    <content type="html">&lt;p&gt;Atom article {slug} says one thing.&lt;/p&gt;</content>
  </entry>"""
        for slug in slugs
    )
    return f'<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom</title>{entries}\n</feed>\n'


@pytest.fixture()
def small_corpus(tiny_settings: Settings) -> Settings:
    """A corpus of two Markdown articles and a three-item feed, not yet indexed."""
    corpus = tiny_settings.corpus_dir
    (corpus / "python.md").write_text(_markdown("learn-python", "Learn Python", "Python"))
    (corpus / "sql.md").write_text(_markdown("learn-sql", "Learn SQL", "SQL"))
    (corpus / "blog.xml").write_text(_rss("first-job", "salary-talk", "remote-work"))
    return tiny_settings


@pytest.fixture()
def indexed_corpus(small_corpus: Settings, embedder: Embedder) -> Settings:
    build_index(small_corpus, embedder)
    return small_corpus


def _texts(settings: Settings, articles: list[Article]) -> set[str]:
    """Every text an index build embeds for these articles: passages, sentences and the
    sentences under their headings."""
    passages = chunk_articles(articles, settings)
    units = {s for p in passages for s in [*p.sentence_texts(), *p.context_texts()]}
    return {p.indexed_text for p in passages} | units


def _snapshot(settings: Settings) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(settings.corpus_dir.iterdir())}


def test_adding_a_markdown_article_embeds_only_its_passages(
    indexed_corpus: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    new = tmp_path / "mlops.md"
    new.write_text(_markdown("mlops-basics", "MLOps Basics", "MLOps"))
    known = _texts(indexed_corpus, load_corpus(indexed_corpus.corpus_dir)[0])
    new_texts = _texts(indexed_corpus, read_articles(new)) - known

    change, summary = add_articles(indexed_corpus, [new], embedder)

    assert [a.slug for a in change.added] == ["mlops-basics"]
    assert change.removed == ()
    assert (indexed_corpus.corpus_dir / "mlops.md").read_bytes() == new.read_bytes()
    assert summary.embedded == len(new_texts)
    assert summary.articles == 6
    assert [(a.slug, a.passages) for a in list_articles(indexed_corpus)] == [
        ("first-job", 1),
        ("salary-talk", 1),
        ("remote-work", 1),
        ("mlops-basics", 2),
        ("learn-python", 2),
        ("learn-sql", 2),
    ]
    assert not [p for p in indexed_corpus.corpus_dir.iterdir() if p.name.startswith(".")]


def test_a_malformed_feed_changes_nothing(indexed_corpus: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "broken.xml"
    bad.write_text(_rss("new-item").replace("</channel>", ""))
    before = _snapshot(indexed_corpus)
    built = indexed_corpus.index_dir.resolve()

    with pytest.raises(CorpusError, match=r"broken\.xml: malformed feed: .*; nothing was added"):
        add_to_corpus(indexed_corpus, [bad])

    assert _snapshot(indexed_corpus) == before
    assert indexed_corpus.index_dir.resolve() == built


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", "text", r"notes\.txt: is not a feed \(\.xml, \.rss, \.atom\), an HTML page"),
        ("empty.md", "", "empty.md: article 'empty' has no text; nothing was added"),
        ("page.html", "", r"page\.html: is empty; nothing was added"),
        ("feed.rss", "<html/>", r"is not an RSS 2\.0 or Atom feed \(root element <html>\)"),
    ],
)
def test_a_file_that_does_not_read_is_refused(
    small_corpus: Settings, tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content)
    before = _snapshot(small_corpus)

    with pytest.raises(CorpusError, match=message):
        add_to_corpus(small_corpus, [tmp_path / name])
    assert _snapshot(small_corpus) == before


def test_an_article_already_in_another_file_is_refused(
    small_corpus: Settings, tmp_path: Path
) -> None:
    (tmp_path / "again.md").write_text(_markdown("learn-sql", "SQL again", "SQL"))
    (tmp_path / "ok.md").write_text(_markdown("new-one", "New one", "Rust"))
    before = _snapshot(small_corpus)

    with pytest.raises(
        CorpusError,
        match=r"again\.md: article https://blog\.example\.com/learn-sql/ is already in the corpus "
        r"from sql\.md; remove it first \(`rag remove learn-sql`\)",
    ):
        add_to_corpus(small_corpus, [tmp_path / "ok.md", tmp_path / "again.md"])
    assert _snapshot(small_corpus) == before


def test_a_file_of_the_same_name_is_replaced(small_corpus: Settings, tmp_path: Path) -> None:
    (tmp_path / "sql.md").write_text(_markdown("learn-sql", "SQL, revised", "SQL"))
    before = _snapshot(small_corpus)

    change = add_to_corpus(small_corpus, [tmp_path / "sql.md"])

    assert [a.title for a in change.added] == ["SQL, revised"]
    assert [a.title for a in change.removed] == ["Learn SQL"]
    assert change.contents == (("sql.md", (tmp_path / "sql.md").read_bytes()),)
    assert _snapshot(small_corpus) == before  # planned, not yet written


def test_a_failed_rebuild_restores_the_corpus(indexed_corpus: Settings, tmp_path: Path) -> None:
    (tmp_path / "mlops.md").write_text(_markdown("mlops-basics", "MLOps Basics", "MLOps"))
    before = _snapshot(indexed_corpus)
    built = indexed_corpus.index_dir.resolve()
    broken = indexed_corpus.with_(model=str(tmp_path / "no-such-model"))

    change = add_to_corpus(broken, [tmp_path / "mlops.md"])
    with pytest.raises(SettingsError, match="no-such-model"):
        apply_change(broken, change)

    assert _snapshot(indexed_corpus) == before
    assert indexed_corpus.index_dir.resolve() == built


@pytest.mark.parametrize("reference", ["learn-python", "https://blog.example.com/learn-python/"])
def test_removing_a_single_article_file_deletes_it(small_corpus: Settings, reference: str) -> None:
    before = _snapshot(small_corpus)

    change = remove_from_corpus(small_corpus, reference)

    assert [a.slug for a in change.removed] == ["learn-python"]
    assert change.contents == (("python.md", None),)
    assert _snapshot(small_corpus) == before  # planned, not yet done


def test_removing_one_item_rewrites_the_feed(small_corpus: Settings, embedder: Embedder) -> None:
    change = remove_from_corpus(small_corpus, "https://blog.example.com/salary-talk")
    apply_change(small_corpus, change, embedder)

    feed = small_corpus.corpus_dir / "blog.xml"
    assert [a.slug for a in change.removed] == ["salary-talk"]
    assert [a.slug for a in read_articles(feed)] == ["first-job", "remote-work"]
    assert "<![CDATA[<h2>About first-job</h2>" in feed.read_text()
    assert feed.read_text().startswith("<?xml version='1.0' encoding='UTF-8'?>\n<rss ")


def test_removing_one_entry_rewrites_an_atom_feed(
    small_corpus: Settings, embedder: Embedder
) -> None:
    feed = small_corpus.corpus_dir / "news.atom"
    feed.write_text(_atom("alpha", "beta"))

    apply_change(small_corpus, remove_from_corpus(small_corpus, "beta"), embedder)

    assert [a.url for a in read_articles(feed)] == ["https://atom.example.com/alpha"]


def test_an_unknown_reference_says_how_to_see_the_articles(small_corpus: Settings) -> None:
    with pytest.raises(
        CorpusError, match=r"no article 'nope' in .*corpus; `rag list` shows each article's slug"
    ):
        remove_from_corpus(small_corpus, "nope")


def test_the_only_article_is_not_removed(tiny_settings: Settings) -> None:
    (tiny_settings.corpus_dir / "one.md").write_text(_markdown("only", "Only", "Go"))

    with pytest.raises(CorpusError, match="'Only' is the corpus's only article"):
        remove_from_corpus(tiny_settings, "only")
    assert (tiny_settings.corpus_dir / "one.md").exists()


def test_listing_without_an_index_says_how_to_build_it(tiny_settings: Settings) -> None:
    with pytest.raises(Exception, match="run `rag index` to build it"):
        list_articles(tiny_settings)


def _options(settings: Settings) -> list[str]:
    return ["--corpus", str(settings.corpus_dir), "--index", str(settings.index_dir)]


def test_cli_adds_lists_and_removes(indexed_corpus: Settings, tmp_path: Path) -> None:
    new = tmp_path / "mlops.md"
    new.write_text(_markdown("mlops-basics", "MLOps Basics", "MLOps"))
    runner = CliRunner()

    added = runner.invoke(cli, ["add", str(new), *_options(indexed_corpus)])
    listed = runner.invoke(cli, ["list", "--index", str(indexed_corpus.index_dir)])
    removed = runner.invoke(cli, ["remove", "salary-talk", *_options(indexed_corpus)])

    assert added.exit_code == 0, added.output
    lines = added.stdout.splitlines()  # stderr has the model's loading bar
    assert lines[0] == "added 'MLOps Basics' (mlops-basics, from mlops.md)"
    assert lines[1].startswith("indexed 6 articles, 9 passages (")
    embedded = int(lines[1].split("(")[1].split()[0])
    assert 0 < embedded < 10  # two passages and their sentences, not the whole corpus
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["PUBLISHED", "PASSAGES", "SLUG", "TITLE"]
    assert ["2025-03-03", "2", "mlops-basics", "MLOps", "Basics"] in rows
    assert rows[-1] == ["6", "articles,", "9", "passages"]
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.splitlines()[0] == "removed 'Salary Talk' (salary-talk, from blog.xml)"
    assert "indexed 5 articles, 8 passages (0 new texts embedded)" in removed.output
    assert "salary-talk" not in [a.slug for a in list_articles(indexed_corpus)]


def test_cli_refuses_a_malformed_feed_and_an_unknown_article(
    small_corpus: Settings, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.rss"
    bad.write_text("<rss><channel><item>")
    before = _snapshot(small_corpus)
    runner = CliRunner()

    added = runner.invoke(cli, ["add", str(bad), *_options(small_corpus)])
    removed = runner.invoke(cli, ["remove", "nope", *_options(small_corpus)])

    assert added.exit_code == 1
    assert "broken.rss: malformed feed" in added.output
    assert "nothing was added" in added.output
    assert removed.exit_code == 1
    assert "no article 'nope'" in removed.output
    assert _snapshot(small_corpus) == before
    assert not small_corpus.index_dir.exists()
