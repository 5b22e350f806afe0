"""Answering: quote the units that answer a question, verbatim and cited, or decline.

The path of a question reads straight down: `rag.analysis` reads it once,
`rag.retrieval` finds passages, `rag.scoring` scores their units with the
fitted answer model, and this module quotes, cites or declines.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from rag.analysis import MAX_QUESTION_CHARS, Question, analyse
from rag.embedding import Embedder
from rag.index import Index
from rag.retrieval import Hit, question_query, retrieve_for
from rag.scoring import (
    MAX_QUOTES,
    QUESTION_FEATURES,
    AnswerModel,
    Candidate,
    candidates,
    load_model,
    rank,
)

__all__ = ["MAX_QUESTION_CHARS", "Answer", "Citation", "answer_question"]

CLOSEST = "The closest passages are listed below."
DECLINED = f"The articles don't cover this question. {CLOSEST}"
_REPEAT_COSINE = 0.9  # a unit this close to one already quoted says the same again
_EXPLAINED = 8  # candidates an explanation lists


@dataclass(frozen=True)
class Citation:
    """A cited passage: ``highlights`` are ``[start, end)`` offsets of quotes in ``text``."""

    n: int
    passage_id: str
    article: str
    section: str
    url: str
    text: str
    score: float
    highlights: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Answer:
    """The result the CLI, the API and the web page all show."""

    question: str
    answered: bool
    answer: str
    citations: tuple[Citation, ...]
    took_ms: float
    probability: float = 0.0  # the model's probability that the articles answer it
    model: str = ""  # the answer model's version
    explain: dict | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.explain is None:
            data.pop("explain")
        return data


@dataclass(frozen=True)
class _Quote:
    hit: Hit
    sentence: int
    row: int


def answer_question(
    index: Index,
    embedder: Embedder,
    question: str,
    *,
    top_k: int = 5,
    history: tuple[str, ...] | list[str] = (),
    mode: str = "hybrid",
    allowed: np.ndarray | None = None,
    model: AnswerModel | None = None,
    explain: bool = False,
) -> Answer:
    """Answer a question with up to three verbatim units, or decline.

    ``history`` holds the conversation's earlier questions, oldest first: a
    follow-up such as "and in Europe?" inherits the question it continues.
    ``explain`` adds, for operators, what each stage saw; it never changes the answer.
    """
    started = time.perf_counter()
    model = model or load_model()
    analysed, hits, pool = find_candidates(
        index, embedder, question, history, top_k=top_k, mode=mode, allowed=allowed
    )
    scores = model.rank(np.array([c.features for c in pool])) if pool else np.zeros(0)
    ranked, ranked_scores, evidence = rank(analysed, pool, scores, hits)
    probability = model.probability(evidence) if ranked else 0.0
    answered = bool(ranked) and probability >= model.threshold
    chosen = _choose(index, model, ranked, ranked_scores) if answered else []
    citations, text = _cite(hits, chosen)
    if not answered:
        text = _declined(analysed, ranked)
    took_ms = (time.perf_counter() - started) * 1000
    return Answer(
        analysed.asked,
        answered,
        text,
        citations,
        round(took_ms, 2),
        round(probability, 4),
        model.version,
        _explain(analysed, ranked, ranked_scores, evidence, probability, model, hits, answered)
        if explain
        else None,
    )


def find_candidates(
    index: Index,
    embedder: Embedder,
    question: str,
    history: tuple[str, ...] | list[str],
    *,
    top_k: int,
    mode: str = "hybrid",
    allowed: np.ndarray | None = None,
) -> tuple[Question, list[Hit], list[Candidate]]:
    """Analyse a question, retrieve its passages and list their candidate units: the part
    of answering that does not depend on the answer model (`rag fit` learns from it)."""
    analysed = analyse(question, history, index)
    vector = embedder.encode_query(analysed.search_text)
    if analysed.follow_up:  # lean the search towards what the follow-up adds
        vector = vector + embedder.encode_query(analysed.text)
        vector = vector / np.linalg.norm(vector)
    required = [*([analysed.roles] if analysed.roles else []), *analysed.distinctive]
    query = question_query(analysed, vector)
    hits = retrieve_for(index, query, top_k, required=required, mode=mode, allowed=allowed)
    return analysed, hits, candidates(index, analysed, vector, hits)


def _choose(
    index: Index, model: AnswerModel, ranked: list[Candidate], scores: np.ndarray
) -> list[_Quote]:
    """The best candidate with its continuation, then any other the ranker finds likely
    enough (``join_probability``), never the same unit twice, at most `MAX_QUOTES`."""
    chosen: list[_Quote] = []
    for n, candidate in enumerate(ranked):
        if n and model.quote_probability(float(scores[n])) < model.join_probability:
            break
        group = [
            _Quote(candidate.hit, i, candidate.row + i - candidate.sentence)
            for i in candidate.units
        ]
        if n and len(chosen) + len(group) > MAX_QUOTES:
            continue
        if chosen and _repeats(index, chosen, group):
            continue
        chosen.extend(group)
        if len(chosen) >= MAX_QUOTES:
            break
    return chosen


def _repeats(index: Index, chosen: list[_Quote], group: list[_Quote]) -> bool:
    taken = {(q.hit.position, q.sentence) for q in chosen}
    if any((q.hit.position, q.sentence) in taken for q in group):
        return True
    vectors = index.sentence_vectors[[q.row for q in chosen]]
    texts = {_text(q) for q in chosen}
    return any(
        _text(q) in texts or float((vectors @ index.sentence_vectors[q.row]).max()) > _REPEAT_COSINE
        for q in group
    )


def _declined(question: Question, ranked: list[Candidate]) -> str:
    """Why a question is declined, in the words of the evidence the model weighed."""
    if question.unknown_names:
        return f"The articles don't mention {', '.join(question.unknown_names)}. {CLOSEST}"
    if ranked and question.wants_figure and ranked[0].feature("kind_missing"):
        return f"The articles don't give that figure. {CLOSEST}"
    return DECLINED


def _explain(
    question: Question,
    ranked: list[Candidate],
    scores: np.ndarray,
    evidence: np.ndarray,
    probability: float,
    model: AnswerModel,
    hits: list[Hit],
    answered: bool,
) -> dict:
    if not hits:
        decided = "retrieval: no passage matches the question and its filters"
    elif answered:
        decided = f"answered: P(answered) {probability:.3f} >= threshold {model.threshold:.3f}"
    else:
        decided = f"declined: P(answered) {probability:.3f} < threshold {model.threshold:.3f}"
    return {
        "model": model.version,
        "analysis": question.to_dict(),
        "candidates": [
            {
                "passage_id": c.hit.passage.id,
                "passage_rank": c.hit.rank,
                "text": c.text(),
                "score": round(float(s), 4),
                "features": c.named(),
            }
            for c, s in zip(ranked[:_EXPLAINED], scores[:_EXPLAINED], strict=False)
        ],
        "evidence": {
            n: round(float(v), 4) for n, v in zip(QUESTION_FEATURES, evidence, strict=True)
        },
        "probability": round(probability, 4),
        "threshold": round(model.threshold, 4),
        "decided": decided,
    }


def _text(quote: _Quote) -> str:
    passage = quote.hit.passage
    return passage.text[slice(*passage.sentences[quote.sentence])]


def _cite(hits: list[Hit], chosen: list[_Quote]) -> tuple[tuple[Citation, ...], str]:
    """Citations (those used by the answer first, then the rest in rank order) and the answer."""
    used = list(dict.fromkeys(q.hit.position for q in chosen))
    order = used + [h.position for h in hits if h.position not in used]
    by_position = {h.position: h for h in hits}
    numbers = {position: n for n, position in enumerate(order, start=1)}
    citations = []
    for position in order:
        hit = by_position[position]
        spans = sorted(
            {hit.passage.sentences[q.sentence] for q in chosen if q.hit.position == position}
        )
        citations.append(
            Citation(
                n=numbers[position],
                passage_id=hit.passage.id,
                article=hit.passage.article_title,
                section=hit.passage.section_path,
                url=hit.passage.url,
                text=hit.passage.text,
                score=round(hit.score, 4),
                highlights=tuple(spans),
            )
        )
    # Quote in reading order within each cited passage, passages in citation order.
    quoted = sorted(chosen, key=lambda q: (numbers[q.hit.position], q.sentence))
    parts = [f"{_text(q)} [{numbers[q.hit.position]}]" for q in quoted]
    return tuple(citations), " ".join(parts)
