"""Retrieval: dense and BM25 search (through the index's store) fused by reciprocal rank."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING

import faiss
import numpy as np

from rag.chunking import Passage
from rag.errors import InputError
from rag.index import Index
from rag.tokens import expand, tokenize

if TYPE_CHECKING:
    from rag.analysis import Question

MODES = ("hybrid", "dense", "bm25")
RRF_K = 30  # Cormack et al. use 60; 30 ranked better on all four of our question sets
CANDIDATES = 50  # how deep each ranked list goes into the fusion
DUPLICATE_COSINE = 0.95  # passages this similar to a better one repeat it and are skipped


@dataclass(frozen=True)
class Query:
    """A question ready to search: its text, tokens and unit vector."""

    text: str
    tokens: tuple[str, ...]
    vector: np.ndarray
    synonyms: tuple[str, ...] = ()  # extra stems searched by BM25, see `rag.tokens.expand`
    emphasis: tuple[str, ...] = ()  # a follow-up's own tokens, which the answer must address


@dataclass(frozen=True)
class Hit:
    """A retrieved passage with the scores that put it where it is."""

    passage: Passage
    position: int  # row of the passage in the index
    rank: int  # 0 for the best hit
    score: float  # fused score that orders the hits
    dense: float  # cosine similarity of the passage to the question


def make_query(text: str, vector: np.ndarray, *, emphasis: str = "") -> Query:
    """A query; tokens of ``emphasis`` (a follow-up's own words) count twice for BM25."""
    stressed = tuple(tokenize(emphasis))
    tokens = (*tokenize(text), *stressed)
    return Query(text, tokens, vector, tuple(expand(tokens)), stressed)


def question_query(question: Question, vector: np.ndarray) -> Query:
    """The query of an analysed question: its searched stems, synonyms and emphasis."""
    return Query(
        question.search_text,
        question.search_tokens,
        vector,
        question.synonyms,
        question.emphasis,
    )


def conversation_query(question: Question, vector: np.ndarray) -> Query:
    """The query of a whole conversation: every earlier question and this one, as one."""
    tokens = question.conversation_tokens
    return Query(question.conversation, tokens, vector, tuple(expand(tokens)))


def fuse(rankings: list[list[Hit]], top_k: int) -> list[Hit]:
    """Hit lists of several queries as one, by reciprocal rank, best first."""
    fused: dict[int, float] = {}
    best: dict[int, Hit] = {}
    for hits in rankings:
        for rank, hit in enumerate(hits):
            fused[hit.position] = fused.get(hit.position, 0.0) + 1.0 / (RRF_K + rank + 1)
            best.setdefault(hit.position, hit)
    order = sorted(fused, key=lambda p: (-fused[p], p))[:top_k]
    return [replace(best[p], rank=rank, score=fused[p]) for rank, p in enumerate(order)]


def retrieve_for(
    index: Index,
    query: Query,
    top_k: int,
    *,
    required: list[frozenset[str]],
    mode: str = "hybrid",
    allowed: np.ndarray | None = None,
) -> list[Hit]:
    """The ``top_k`` best passages, with the best passage naming what the question names
    when none does.

    "What does a network architect do?" or "AI engineer pay in europe" rank
    passages about architects or pay in general first; the one table row about
    network architects, or about Europe, must be among them. Each of
    ``required`` (a role's word, a name's tokens) not found in any hit brings
    in its best passage, which takes the place of the lowest hit.
    """
    hits = retrieve(index, query, top_k, mode=mode, allowed=allowed)
    if not hits or not required:
        return hits
    words = [index.passage_tokens[hit.position] for hit in hits]
    missing = [terms for terms in required if not any(terms <= w for w in words)]
    extra: list[Hit] = []
    for terms in missing[: max(0, top_k - 1)]:
        mask = np.array([terms <= tokens for tokens in index.passage_tokens])
        if allowed is not None:
            mask &= allowed
        found = retrieve(index, query, 1, mode=mode, allowed=mask) if mask.any() else []
        if found and all(found[0].position != h.position for h in [*hits, *extra]):
            extra.append(found[0])
    if not extra:
        return hits
    kept = hits[: top_k - len(extra)]
    return [*kept, *(replace(hit, rank=len(kept) + i) for i, hit in enumerate(extra))]


def retrieve(
    index: Index,
    query: Query,
    top_k: int,
    *,
    mode: str = "hybrid",
    allowed: np.ndarray | None = None,
) -> list[Hit]:
    """The ``top_k`` best passages for a query, best first.

    Four ranked lists are fused by reciprocal rank: passages by embedding,
    passages by their best sentence's embedding, passages by BM25,
    and passages by their best sentence's BM25. Whole passages catch topical
    matches; single sentences catch the one line that answers inside a passage
    about something else. ``allowed`` masks passages before ranking, so a
    filtered question still gets ``top_k`` passages when that many match.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    total = len(index.passages)
    depth = min(CANDIDATES, total if allowed is None else int(allowed.sum()))
    if depth == 0:
        return []
    store = index.store
    lists: list[np.ndarray] = []
    sentence_lists: list[np.ndarray] = []
    dense = store.nearest_passages(query.vector, depth, allowed)
    if mode in ("hybrid", "dense"):
        lists.append(_positions(dense))
        sentence_lists.append(
            _positions(store.nearest_sentence_passages(query.vector, depth, allowed))
        )
    if mode in ("hybrid", "bm25") and query.tokens:
        tokens = [*query.tokens, *query.synonyms]
        lists.append(_positions(store.lexical_passages(tokens, depth, allowed)))
        sentence_lists.append(_positions(store.lexical_sentence_passages(tokens, depth, allowed)))
    fused: dict[int, float] = {}
    for ranked in lists + sentence_lists:
        for rank, position in enumerate(ranked.tolist()):
            fused[position] = fused.get(position, 0.0) + 1.0 / (RRF_K + rank + 1)
    order = sorted(fused, key=lambda p: (-fused[p], p))
    # Reciprocal rank fusion favours passages every list ranks fairly high over one that a
    # single list ranks first. The passage of the best sentence by embedding and the one of
    # the best sentence by BM25 are kept in the top_k all the same: one retriever is often
    # alone in seeing the one line that answers (a figure in a table row, a paraphrase).
    heads = list(dict.fromkeys(int(ranked[0]) for ranked in sentence_lists if len(ranked)))
    heads = heads[: max(0, top_k - 2)]  # a short list keeps the fused best first
    chosen: list[int] = []
    for position in order:
        if len(chosen) + len([h for h in heads if h not in chosen]) >= top_k:
            break
        if not _repeats(index, position, chosen):
            chosen.append(position)
    for head in heads:
        if head not in chosen and len(chosen) < top_k and not _repeats(index, head, chosen):
            chosen.append(head)
    for position in order:  # fill up when heads were repeats
        if len(chosen) == top_k:
            break
        if position not in chosen and not _repeats(index, position, chosen):
            chosen.append(position)
    chosen.sort(key=lambda p: (-fused[p], p))
    hits = []
    for rank, position in enumerate(chosen):
        cosine = dense.get(position)
        if cosine is None:
            cosine = float(index.passage_vectors[position] @ query.vector)
        hits.append(Hit(index.passages[position], position, rank, fused[position], cosine))
    return hits


def _positions(ranking: dict[int, float]) -> np.ndarray:
    return np.fromiter(ranking, dtype=np.int64, count=len(ranking))


def _repeats(index: Index, position: int, chosen: list[int]) -> bool:
    """Whether a passage nearly repeats one already chosen (the articles overlap a lot).

    The passages of one section follow each other and are never repeats of each other,
    however alike they read: the next one may hold the line that answers.
    """
    passage = index.passages[position]
    others = [
        c
        for c in chosen
        if (index.passages[c].article_url, index.passages[c].anchor)
        != (passage.article_url, passage.anchor)
    ]
    if not others:
        return False
    vectors = index.passage_vectors[others]
    return bool((vectors @ index.passage_vectors[position]).max() >= DUPLICATE_COSINE)


def passage_filter(
    index: Index,
    *,
    articles: list[str] | tuple[str, ...] = (),
    published_after: date | None = None,
    published_before: date | None = None,
) -> np.ndarray | None:
    """A mask of the passages a filtered question may use, or ``None`` for no filter.

    ``articles`` holds article URLs or slugs; an unknown one raises
    `InputError` naming it. Dates bound the article's publication day, inclusive.
    """
    if not articles and published_after is None and published_before is None:
        return None
    known = {a.url: a.url for a in index.articles} | {a.slug: a.url for a in index.articles}
    wanted: set[str] = set()
    for reference in articles:
        url = known.get(reference.strip()) or known.get(reference.strip().rstrip("/") + "/")
        if url is None:
            raise InputError(
                f"articles: no indexed article has the URL or slug {reference!r}; "
                "see /api/articles or `rag list`"
            )
        wanted.add(url)
    mask = np.ones(len(index.passages), dtype=bool)
    for position, passage in enumerate(index.passages):
        if wanted and passage.article_url not in wanted:
            mask[position] = False
            continue
        if published_after is None and published_before is None:
            continue
        day = date.fromisoformat(passage.published[:10]) if passage.published else None
        if (
            day is None
            or (published_after and day < published_after)
            or (published_before and day > published_before)
        ):
            mask[position] = False
    return mask


def use_one_thread() -> None:
    """Run query-time BLAS and FAISS on one thread.

    A question's arithmetic is small: on a shared 2-core machine, two BLAS
    threads per request contend with other requests and spin, and a
    matrix-vector product takes 15x longer than on one thread.
    Concurrency comes from serving several requests at once instead.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    faiss.omp_set_num_threads(1)
