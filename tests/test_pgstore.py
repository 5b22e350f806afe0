"""The PostgreSQL store: it ranks as the file store does, builds take turns, old generations go."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import article

from rag import pgstore
from rag.embedding import Embedder
from rag.errors import StorageError
from rag.index import Index, build_index, load_index
from rag.retrieval import make_query, retrieve
from rag.settings import Settings
from rag.tokens import tokenize

QUESTIONS = (
    "What is the median base salary of AI engineers in the US?",
    "What are the main causes of the AI talent shortage?",
    "Which programming languages should an AI engineer learn?",
    "How much do AI architects earn in San Francisco?",
    "What does an AI ethics officer earn?",
    "What certifications help AI architects?",
    "Is a PhD needed to become a machine learning engineer?",
    "How do companies hire AI experts?",
    "remote work for data scientists",
    "prompt engineer salary",
)
# Both stores compute in float32 (FAISS, pgvector) or add bm25s's float32 weights (bm25s in
# float32, PostgreSQL in float64): scores agree to well within this relative tolerance.
RELATIVE = 1e-4
SEARCHES = (
    "nearest_passages",
    "nearest_sentence_passages",
    "lexical_passages",
    "lexical_sentence_passages",
)


def rankings(index: Index, embedder: Embedder, question: str, allowed=None) -> dict[str, dict]:
    vector = embedder.encode([question])[0]
    tokens = tokenize(question)
    return {
        "nearest_passages": index.store.nearest_passages(vector, 10, allowed),
        "nearest_sentence_passages": index.store.nearest_sentence_passages(vector, 10, allowed),
        "lexical_passages": index.store.lexical_passages(tokens, 10, allowed),
        "lexical_sentence_passages": index.store.lexical_sentence_passages(tokens, 10, allowed),
    }


def assert_agree(files: dict[int, float], database: dict[int, float]) -> None:
    """Same top-5 set and top-10 order up to near-ties; each shared score within RELATIVE."""
    assert set(list(files)[:5]) == set(list(database)[:5]), (files, database)
    for position in set(files) & set(database):
        assert database[position] == pytest.approx(files[position], rel=RELATIVE)
    assert len(files) == len(database)


@pytest.mark.parametrize("question", QUESTIONS)
def test_both_stores_rank_the_real_corpus_alike(
    corpus_index: Index, pg_corpus_index: Index, embedder: Embedder, question: str
) -> None:
    files, database = (rankings(i, embedder, question) for i in (corpus_index, pg_corpus_index))
    for search in SEARCHES:
        assert_agree(files[search], database[search])
    query = make_query(question, embedder.encode([question])[0])
    by_files = [h.passage.id for h in retrieve(corpus_index, query, 10)]
    by_database = [h.passage.id for h in retrieve(pg_corpus_index, query, 10)]
    assert set(by_files[:5]) == set(by_database[:5])


def test_both_stores_filter_alike(
    corpus_index: Index, pg_corpus_index: Index, embedder: Embedder
) -> None:
    allowed = np.zeros(len(corpus_index.passages), dtype=bool)
    allowed[::3] = True
    question = "How much do AI architects earn in San Francisco?"
    files = rankings(corpus_index, embedder, question, allowed)
    database = rankings(pg_corpus_index, embedder, question, allowed)
    for search in SEARCHES:
        assert all(allowed[p] for p in database[search])
        assert_agree(files[search], database[search])


def test_the_database_index_holds_the_same_records(
    corpus_index: Index, pg_corpus_index: Index
) -> None:
    assert pg_corpus_index.passages == corpus_index.passages
    assert pg_corpus_index.articles == corpus_index.articles
    # A build with a database embeds its texts in the queue's batches, another batch size
    # than the file build's: the model's padding moves the last float digits, no more.
    assert np.allclose(pg_corpus_index.passage_vectors, corpus_index.passage_vectors, atol=1e-5)
    assert np.allclose(pg_corpus_index.sentence_vectors, corpus_index.sentence_vectors, atol=1e-3)
    assert pg_corpus_index.generation.isdigit()


def two_machines(tiny_settings: Settings, database_url: str) -> tuple[Settings, Settings]:
    """Two builders with corpus and index folders of their own, sharing one database."""
    machines = []
    for name, articles in (("one", ("alpha",)), ("two", ("beta", "gamma"))):
        root = tiny_settings.corpus_dir.parent / name
        (root / "corpus").mkdir(parents=True)
        for slug in articles:
            (root / "corpus" / f"{slug}.md").write_text(article(slug, slug.title()))
        machines.append(
            tiny_settings.with_(
                corpus_dir=root / "corpus",
                index_dir=root / "index",
                database_url=database_url,
                generation_grace_seconds=0,
            )
        )
    return machines[0], machines[1]


def test_two_builds_at_once_take_turns_and_the_active_generation_is_whole(
    tiny_settings: Settings, database_url: str, embedder: Embedder
) -> None:
    one, two = two_machines(tiny_settings, database_url)
    told: dict[str, list[str]] = {"one": [], "two": []}
    finished: list[tuple[str, int]] = []

    def build(name: str, settings: Settings) -> None:
        summary = build_index(settings, embedder, report=told[name].append)
        finished.append((name, summary.articles))

    with pgstore.build_lock(one):  # a third build holds the lock while both start
        builders = [
            threading.Thread(target=build, args=(name, settings))
            for name, settings in (("one", one), ("two", two))
        ]
        for builder in builders:
            builder.start()
        deadline = time.monotonic() + 120
        while not all(any("another build" in m for m in told[n]) for n in told):
            assert time.monotonic() < deadline, told
            time.sleep(0.1)
    for builder in builders:
        builder.join(timeout=300)
    assert sorted(finished) == [("one", 1), ("two", 2)]
    last_articles = finished[-1][1]
    index = load_index(one, embedder)
    assert len(index.articles) == last_articles
    assert index.manifest["counts"]["passages"] == len(index.passages)
    assert sum(a.passages for a in index.articles) == len(index.passages)
    assert int(index.generation) == 2  # the two generations were written one after the other
    query = make_query("specialists in Porto", embedder.encode(["specialists in Porto"])[0])
    assert {h.passage.article_url for h in retrieve(index, query, 5)} == {
        a.url for a in index.articles
    }


def test_a_superseded_generation_is_pruned_only_once_no_replica_serves_it(
    tiny_settings: Settings, database_url: str, embedder: Embedder
) -> None:
    one, _ = two_machines(tiny_settings, database_url)
    build_index(one, embedder)
    old = load_index(one, embedder)
    replica = pgstore.Listener(one)
    replica.pin(int(old.generation))
    (one.corpus_dir / "delta.md").write_text(article("delta", "Delta"))
    build_index(one, embedder)  # grace 0: the build prunes, but a replica holds the old one
    assert pgstore.generation_count(one) == 2
    vector = embedder.encode(["specialists in Porto"])[0]
    assert old.store.nearest_passages(vector, 3, None)  # the old one still answers
    replica.pin(int(load_index(one, embedder).generation))  # the replica moves on
    assert pgstore.prune(one) == [int(old.generation)]
    assert pgstore.generation_count(one) == 1
    replica.close()


def test_an_unreachable_database_is_one_clear_line(tiny_settings: Settings) -> None:
    (tiny_settings.corpus_dir / "alpha.md").write_text(article("alpha", "Alpha"))
    settings = tiny_settings.with_(database_url="postgresql://nobody@127.0.0.1:9/none")
    with pytest.raises(StorageError, match="cannot connect to the database in RAG_DATABASE_URL"):
        load_index(settings)


def test_a_database_index_of_an_older_format_is_rebuilt_not_served(
    tiny_settings: Settings, database_url: str, embedder: Embedder
) -> None:
    """The tokens change with the format: a generation of an older one is not current, and
    loading it says to rebuild rather than search it with tokens it was not built with."""
    from rag.database import connect
    from rag.errors import IndexMismatchError
    from rag.index import FORMAT_VERSION, index_is_current

    one, _ = two_machines(tiny_settings, database_url)
    build_index(one, embedder)
    assert index_is_current(one)
    with connect(database_url) as connection:
        connection.execute(
            "UPDATE rag_generations SET manifest = jsonb_set(manifest, '{format_version}', %s)"
            " WHERE id = (SELECT generation FROM rag_active_generation)",
            (str(FORMAT_VERSION - 1),),
        )
    assert not index_is_current(one)
    with pytest.raises(IndexMismatchError, match="run `rag index` to rebuild"):
        load_index(one, embedder)
    build_index(one, embedder)
    assert load_index(one, embedder).manifest["format_version"] == FORMAT_VERSION
