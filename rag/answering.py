"""Answering: quote the units that answer a question, verbatim and cited, or decline.

The path of a question reads straight down: `rag.analysis` reads it once,
`rag.retrieval` finds passages, `rag.scoring` scores their units with the
fitted answer model, and this module quotes, cites or declines.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from rag.analysis import MAX_QUESTION_CHARS, Question, analyse
from rag.embedding import Embedder
from rag.index import Index
from rag.ingest import PATH_SEPARATOR
from rag.retrieval import (
    Hit,
    conversation_query,
    fuse,
    question_query,
    retrieve,
    retrieve_for,
)
from rag.scoring import (
    MAX_QUOTES,
    QUESTION_FEATURES,
    AnswerModel,
    Candidate,
    candidates,
    load_model,
    rank,
)

__all__ = ["MAX_QUESTION_CHARS", "Answer", "Citation", "Quote", "answer_question"]

CLOSEST = "The closest passages are listed below."
DECLINED = f"The articles don't cover this question. {CLOSEST}"
_REPEAT_COSINE = 0.9  # a unit this close to one already quoted says the same again
_EXPLAINED = 8  # candidates an explanation lists
# A unit opening with one of these leans on what came before it ("This certification ...",
# "They ..."): it is shown under its section title. A display choice; it decides no answer.
_LEANS = re.compile(
    r"^(this|these|that|those|they|them|their|it|its|he|she|such|both|another|the latter|"
    r"the former|here|there)\b",
    re.I,
)


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
class Quote:
    """One quoted unit, verbatim: ``text`` is ``citation``'s passage text at ``span``.

    ``kind`` is ``sentence``, ``table_row`` (with its ``(header, value)`` ``cells``)
    or ``list_item`` (with the ``intro`` line of its list, when it has one).
    ``section`` is the title it stands under; ``needs_section`` says the text leans
    on what comes before it ("This certification ...") and reads right only under it.
    """

    citation: int
    kind: str
    text: str
    span: tuple[int, int]
    section: str
    needs_section: bool = False
    cells: tuple[tuple[str, str], ...] = ()
    intro: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.kind != "table_row":
            data.pop("cells")
        if self.kind != "list_item":
            data.pop("intro")
        return data


@dataclass(frozen=True)
class Answer:
    """The result the CLI, the API and the web page all show.

    ``answer`` is the plain-text rendering of ``quotes``, each followed by its
    citation number.
    """

    question: str
    answered: bool
    answer: str
    citations: tuple[Citation, ...]
    took_ms: float
    probability: float = 0.0  # the model's probability that the articles answer it
    model: str = ""  # the answer model's version
    explain: dict | None = None
    quotes: tuple[Quote, ...] = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["quotes"] = [q.to_dict() for q in self.quotes]
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
    citations, quotes, text = _cite(hits, chosen)
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
        quotes,
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
    own_vector = embedder.encode_query(analysed.text) if analysed.follow_up else vector
    if analysed.known_text:  # how far the words no article uses move the question
        lost = 1.0 - float(own_vector @ embedder.encode_query(analysed.known_text))
        analysed = replace(analysed, unknown_meaning=lost)
    if analysed.follow_up:  # lean the search towards what the follow-up adds
        vector = vector + own_vector
        vector = vector / np.linalg.norm(vector)
    required = [*([analysed.roles] if analysed.roles else []), *analysed.distinctive]
    query = question_query(analysed, vector)
    if not analysed.conversation:
        hits = retrieve_for(index, query, top_k, required=required, mode=mode, allowed=allowed)
    else:
        # In a conversation, the question as analysed and the whole conversation are both
        # searched, each twice as deep, and fused: a follow-up keeps its thread even when
        # it is not recognised as one, and a new question still finds its own passages.
        depth = 2 * top_k
        own = retrieve_for(index, query, depth, required=required, mode=mode, allowed=allowed)
        together = embedder.encode_query(analysed.conversation)
        whole = conversation_query(analysed, together)
        hits = fuse([own, retrieve(index, whole, depth, mode=mode, allowed=allowed)], top_k)
        vector = vector + together
        vector = vector / np.linalg.norm(vector)
    return analysed, hits, candidates(index, analysed, vector, hits)


def _choose(
    index: Index, model: AnswerModel, ranked: list[Candidate], scores: np.ndarray
) -> list[_Quote]:
    """The best candidate with its continuation, then any other the ranker finds nearly as
    likely to hold the answer (`AnswerModel.joins`), never the same unit twice, at most
    `MAX_QUOTES`."""
    chosen: list[_Quote] = []
    for n, candidate in enumerate(ranked):
        if n and not model.joins(float(scores[n]), float(scores[0])):
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


def _cite(
    hits: list[Hit], chosen: list[_Quote]
) -> tuple[tuple[Citation, ...], tuple[Quote, ...], str]:
    """Citations (those used by the answer first, then the rest in rank order), the quotes
    and the answer's plain text."""
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
    return tuple(citations), _quotes(quoted, numbers), " ".join(parts)


def _quotes(quoted: list[_Quote], numbers: dict[int, int]) -> tuple[Quote, ...]:
    """The structured quotes in reading order. A list's introduction, when the items
    that follow it are quoted too, is their ``intro`` rather than a quote of its own."""
    quotes: list[Quote] = []
    for n, quote in enumerate(quoted):
        passage = quote.hit.passage
        shape = passage.shape(quote.sentence)
        text = _text(quote)
        following = quoted[n + 1] if n + 1 < len(quoted) else None
        previous = quoted[n - 1] if n else None
        # The sentence quoted just before it is what a leaning unit leans on.
        after_its_antecedent = (
            previous is not None
            and previous.hit.position == quote.hit.position
            and previous.sentence == quote.sentence - 1
        )
        if (
            following is not None
            and following.hit.position == quote.hit.position
            and following.sentence == quote.sentence + 1
            and passage.shape(following.sentence).kind == "list_item"
            and passage.shape(following.sentence).intro == text
        ):
            continue
        quotes.append(
            Quote(
                citation=numbers[quote.hit.position],
                kind=shape.kind,
                text=text,
                span=passage.sentences[quote.sentence],
                section=passage.section_path.rsplit(PATH_SEPARATOR, 1)[-1],
                needs_section=shape.kind == "sentence"
                and not after_its_antecedent
                and bool(_LEANS.match(text)),
                cells=shape.cells,
                intro=shape.intro,
            )
        )
    return tuple(quotes)
