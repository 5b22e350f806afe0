"""Chunking invariants, the index round trip, the embedding cache and safe rebuilds."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.chunking import chunk_articles
from rag.cli import cli
from rag.embedding import Embedder
from rag.errors import CorpusError, IndexMismatchError, IndexMissingError
from rag.index import FORMAT_VERSION, Index, build_index, index_is_current, load_index
from rag.ingest import load_corpus
from rag.retrieval import make_query, retrieve
from rag.settings import Settings

CORPUS = Path(__file__).resolve().parent.parent / "corpus"

ARTICLE = """---
title: {title}
url: https://example.org/{slug}/
date: 2025-06-01
---
## {heading}

{body}
"""


def write_article(folder: Path, slug: str, heading: str, body: str) -> None:
    (folder / f"{slug}.md").write_text(
        ARTICLE.format(title=slug.replace("-", " ").title(), slug=slug, heading=heading, body=body),
        encoding="utf-8",
    )


def tiny_corpus(settings: Settings) -> None:
    write_article(
        settings.corpus_dir,
        "robotics-pay",
        "Robotics salaries",
        "Robotics engineers in Norway earn about 900,000 kroner a year. Bonuses are rare.",
    )
    write_article(
        settings.corpus_dir,
        "gardening",
        "Growing tomatoes",
        "Tomatoes need six hours of sun and steady watering. Prune the side shoots weekly.",
    )


def test_passages_stay_in_their_section_and_fit_the_model() -> None:
    settings = Settings()
    articles = load_corpus(CORPUS)[0]
    passages = chunk_articles(articles, settings)
    sections = {(a.url, s.anchor): "\n".join(s.lines) for a in articles for s in a.sections}
    assert 600 < len(passages) < 1200
    for passage in passages:
        section_text = sections[(passage.article_url, passage.anchor)]
        for start, end in passage.sentences:
            sentence = passage.text[start:end]
            assert sentence == sentence.strip() and sentence in section_text
        words = len(passage.text.split())
        assert words <= settings.chunk_max_words or len(passage.sentences) == 1
    sizes = sorted(len(p.text.split()) for p in passages)
    assert sizes[len(sizes) // 2] >= 50  # median: sections are often short (FAQ answers)
    assert len({p.id for p in passages}) == len(passages)


def test_passage_ids_are_stable_across_rebuilds() -> None:
    settings = Settings()
    first = [p.id for p in chunk_articles(load_corpus(CORPUS)[0], settings)]
    second = [p.id for p in chunk_articles(load_corpus(CORPUS)[0], settings)]
    assert first == second


def test_long_sections_overlap_by_one_sentence() -> None:
    settings = Settings()
    passages = chunk_articles(load_corpus(CORPUS)[0], settings)
    for before, after in itertools.pairwise(passages):
        if before.anchor == after.anchor and before.article_url == after.article_url:
            last = before.text[slice(*before.sentences[-1])]
            first = after.text[slice(*after.sentences[0])]
            if len(last.split()) <= settings.chunk_words // 3:
                assert first == last
            break
    else:
        pytest.fail("no long section was split")


def test_round_trip_finds_the_right_passage_first(
    tiny_settings: Settings, embedder: Embedder
) -> None:
    tiny_corpus(tiny_settings)
    summary = build_index(tiny_settings, embedder)
    assert (summary.articles, summary.passages) == (2, 2)
    index = load_index(tiny_settings, embedder)
    question = "How much are robot engineers paid in Norway?"
    hits = retrieve(index, make_query(question, embedder.encode([question])[0]), 2)
    assert hits[0].passage.article_url == "https://example.org/robotics-pay/"
    assert hits[0].passage.url == "https://example.org/robotics-pay/#robotics-salaries"
    manifest = index.manifest
    assert manifest["format_version"] == FORMAT_VERSION
    assert (manifest["model"], manifest["dimension"]) == ("all-MiniLM-L6-v2", 384)
    assert [f["name"] for f in manifest["corpus_files"]] == ["gardening.md", "robotics-pay.md"]
    assert manifest["counts"] == {"articles": 2, "sections": 2, "passages": 2, "sentences": 4}


def test_rebuild_reuses_cached_embeddings(tiny_settings: Settings, embedder: Embedder) -> None:
    tiny_corpus(tiny_settings)
    # 2 passages, 4 sentences, and the 4 under their headings
    assert build_index(tiny_settings, embedder).embedded == 10
    assert build_index(tiny_settings, embedder).embedded == 0
    write_article(tiny_settings.corpus_dir, "new", "Fresh", "A brand new passage about pay.")
    assert build_index(tiny_settings, embedder).embedded == 3  # its passage, sentence, context
    assert tiny_settings.index_dir.is_symlink()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.xml", "<rss><channel><item>", "broken.xml: malformed feed"),
        ("fake.rss", "just some text", "fake.rss: malformed feed"),
    ],
)
def test_a_bad_file_stops_the_build_and_keeps_the_old_index(
    tiny_settings: Settings, embedder: Embedder, name: str, content: str, message: str
) -> None:
    tiny_corpus(tiny_settings)
    build_index(tiny_settings, embedder)
    before = os.readlink(tiny_settings.index_dir)
    manifest = (tiny_settings.index_dir / "manifest.json").read_text()
    (tiny_settings.corpus_dir / name).write_text(content)
    with pytest.raises(CorpusError, match=message):
        build_index(tiny_settings, embedder)
    assert os.readlink(tiny_settings.index_dir) == before
    assert (tiny_settings.index_dir / "manifest.json").read_text() == manifest
    assert load_index(tiny_settings, embedder).manifest["counts"]["articles"] == 2


def test_rag_index_cli_summary_and_errors(tiny_settings: Settings) -> None:
    runner = CliRunner()
    args = ["--corpus", str(tiny_settings.corpus_dir), "--index", str(tiny_settings.index_dir)]
    result = runner.invoke(cli, ["index", "--quiet", *args])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: no articles in {tiny_settings.corpus_dir}: "
        "add .xml/.rss feeds, .html pages or .md files"
    )
    assert not tiny_settings.index_dir.exists()
    tiny_corpus(tiny_settings)
    result = runner.invoke(cli, ["index", "--quiet", *args])
    assert result.exit_code == 0, result.output
    assert "indexed 2 articles, 2 sections, 2 passages (10 texts embedded)" in result.output
    missing = [
        "index",
        "--quiet",
        "--corpus",
        str(tiny_settings.corpus_dir / "nope"),
        "--index",
        str(tiny_settings.index_dir),
    ]
    result = runner.invoke(cli, missing)
    assert result.exit_code == 1 and "does not exist" in result.output


def test_rag_index_if_needed_builds_only_what_is_out_of_date(tiny_settings: Settings) -> None:
    runner = CliRunner()
    args = ["index", "--quiet", "--if-needed", "--corpus", str(tiny_settings.corpus_dir)]
    args += ["--index", str(tiny_settings.index_dir)]
    tiny_corpus(tiny_settings)
    assert not index_is_current(tiny_settings)
    assert "indexed 2 articles" in runner.invoke(cli, args).output  # missing: built
    assert index_is_current(tiny_settings)
    result = runner.invoke(cli, args)
    assert result.exit_code == 0 and "is up to date" in result.output
    write_article(tiny_settings.corpus_dir, "new", "Fresh", "A brand new passage about pay.")
    assert not index_is_current(tiny_settings)  # a corpus file more
    assert "indexed 3 articles" in runner.invoke(cli, args).output
    manifest = tiny_settings.index_dir / "manifest.json"
    old = json.loads(manifest.read_text()) | {"format_version": FORMAT_VERSION - 1}
    manifest.write_text(json.dumps(old))
    assert not index_is_current(tiny_settings)  # an older format
    assert "indexed 3 articles" in runner.invoke(cli, args).output
    assert index_is_current(tiny_settings)
    other = json.loads(manifest.read_text()) | {"builder": {"code": "built-by-other-code"}}
    manifest.write_text(json.dumps(other))
    assert not index_is_current(tiny_settings)  # built by other ingest or chunking code
    assert "indexed 3 articles" in runner.invoke(cli, args).output
    assert index_is_current(tiny_settings)


def test_load_refuses_missing_and_mismatched_indexes(
    tiny_settings: Settings, embedder: Embedder
) -> None:
    with pytest.raises(IndexMissingError, match="run `rag index`"):
        load_index(tiny_settings, embedder)
    tiny_corpus(tiny_settings)
    build_index(tiny_settings, embedder)
    with pytest.raises(IndexMismatchError, match="built with model 'all-MiniLM-L6-v2'"):
        load_index(tiny_settings.with_(model="/models/other"), embedder)
    manifest_path = tiny_settings.index_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexMismatchError, match="format version 99"):
        load_index(tiny_settings, embedder)
    manifest_path.write_text(json.dumps({**manifest, "dimension": 768}))
    with pytest.raises(IndexMismatchError, match="768-dimensional"):
        load_index(tiny_settings, embedder)
    manifest_path.write_text(json.dumps(manifest))
    (tiny_settings.index_dir / "passages.jsonl").write_text("")
    with pytest.raises(IndexMismatchError, match=r"passages\.jsonl is 0 bytes, its manifest says"):
        load_index(tiny_settings, embedder)


def test_the_real_index_loads(corpus_index: Index) -> None:
    counts = corpus_index.manifest["counts"]
    assert counts["articles"] == 6 and counts["passages"] == len(corpus_index.passages)
    assert corpus_index.store.dense.ntotal == counts["passages"]


def test_an_hnsw_index_answers_and_filters_like_a_flat_one(
    tiny_settings: Settings, embedder: Embedder
) -> None:
    from rag.retrieval import passage_filter

    tiny_corpus(tiny_settings)
    settings = tiny_settings.with_(index_kind="hnsw")
    build_index(settings, embedder)
    index = load_index(settings, embedder)
    assert index.manifest["index_kind"] == {"passages": "hnsw", "sentences": "hnsw"}
    question = "How much are robot engineers paid in Norway?"
    query = make_query(question, embedder.encode([question])[0])
    assert retrieve(index, query, 2)[0].passage.article_url == "https://example.org/robotics-pay/"
    allowed = passage_filter(index, articles=["gardening"])
    hits = retrieve(index, query, 2, allowed=allowed)
    assert [h.passage.article_url for h in hits] == ["https://example.org/gardening/"]
