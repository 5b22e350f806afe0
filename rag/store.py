"""Store: what retrieval searches, behind one interface — embedded files or PostgreSQL.

Retrieval ranks passages four ways (by embedding and by BM25, each over whole
passages and over single sentences) and needs nothing else from storage: the
passage and article records, and the arrays the answer step reads, are loaded
into the `rag.index.Index` with the store. `FileStore` searches FAISS and bm25s
in memory (the default); `rag.pgstore.PgStore` asks PostgreSQL with pgvector
(``RAG_DATABASE_URL``). Both return the same rankings on the same build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import bm25s
import faiss
import numpy as np

# A ranking: passage position -> score, best first (ties: the lower position first).
Ranking = dict[int, float]


class Store(Protocol):
    """Top-k searches over one generation of the index.

    ``allowed`` (a mask over passage positions, or None) restricts every search
    to those passages before ranking, so a filtered question still gets ``depth``
    of them when that many match.
    """

    @property
    def generation(self) -> str:
        """Which build this store serves (a build folder's name, or a database generation)."""
        ...

    def nearest_passages(
        self, vector: np.ndarray, depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        """Passages by inner product of their unit vector with ``vector`` (their cosine)."""
        ...

    def nearest_sentence_passages(
        self, vector: np.ndarray, depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        """Passages in the order of their sentences' cosines: the ``4 * depth`` nearest
        sentences, each standing for its passage the first time it is met."""
        ...

    def lexical_passages(
        self, tokens: list[str], depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        """Passages by BM25 of ``tokens`` (a repeated token counts again); only scores above 0."""
        ...

    def lexical_sentence_passages(
        self, tokens: list[str], depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        """Passages by the BM25 of their best sentence (under its heading); only above 0."""
        ...


@dataclass(frozen=True)
class FileStore:
    """FAISS and bm25s indexes loaded from a build folder, searched in this process."""

    dense: faiss.Index
    sentence_dense: faiss.Index
    bm25: bm25s.BM25
    sentence_bm25: bm25s.BM25
    sentence_start: np.ndarray  # passage i's sentences are rows start[i]:start[i + 1]
    build: str

    @property
    def generation(self) -> str:
        return self.build

    def nearest_passages(
        self, vector: np.ndarray, depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.flatnonzero(allowed)))
        scores, positions = self.dense.search(vector[None, :], depth, params=params)
        return {int(p): float(s) for p, s in zip(positions[0], scores[0], strict=True) if p >= 0}

    def nearest_sentence_passages(
        self, vector: np.ndarray, depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        params = None
        if allowed is not None:
            rows = np.flatnonzero(np.repeat(allowed, np.diff(self.sentence_start)))
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(rows))
        # Several sentences of one passage may come first: look deeper than `depth`.
        scores, rows = self.sentence_dense.search(vector[None, :], depth * 4, params=params)
        found = rows[0] >= 0
        passages = np.searchsorted(self.sentence_start, rows[0][found], side="right") - 1
        ranking: Ranking = {}
        for passage, score in zip(passages.tolist(), scores[0][found].tolist(), strict=True):
            ranking.setdefault(passage, score)
        return dict(list(ranking.items())[:depth])

    def lexical_passages(
        self, tokens: list[str], depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        return _top(self.bm25.get_scores(tokens), depth, allowed)

    def lexical_sentence_passages(
        self, tokens: list[str], depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        scores = self.sentence_bm25.get_scores(tokens)
        return _top(np.maximum.reduceat(scores, self.sentence_start[:-1]), depth, allowed)


def _top(scores: np.ndarray, depth: int, allowed: np.ndarray | None) -> Ranking:
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[:depth]
    order = order[scores[order] > 0]
    return {int(p): float(scores[p]) for p in order}
