"""The PostgreSQL store: it ranks as the file store does, builds take turns, old generations go."""

from __future__ import annotations

import numpy as np
import pytest

from rag.embedding import Embedder
from rag.index import Index
from rag.retrieval import make_query, retrieve
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
    assert np.array_equal(pg_corpus_index.passage_vectors, corpus_index.passage_vectors)
    assert np.array_equal(pg_corpus_index.sentence_vectors, corpus_index.sentence_vectors)
    assert pg_corpus_index.generation.isdigit()
