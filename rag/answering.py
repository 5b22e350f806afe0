"""Answering: pick the sentences that answer a question, quote them verbatim and cite them."""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass

import numpy as np

from rag.embedding import Embedder
from rag.errors import InputError
from rag.index import Index
from rag.retrieval import Hit, Query, make_query, retrieve
from rag.tokens import STOPWORDS, normalise, synonyms, tokenize

MAX_QUESTION_CHARS = 1000
MAX_ANSWER_SENTENCES = 3
DECLINED = "The articles don't cover this question. The closest passages are listed below."

# Sentence score = cosine(question, sentence) + LEXICAL_WEIGHT * share of the question's
# IDF mass found in the sentence or its heading + RANK_WEIGHT / (1 + passage rank)
# + the question-type bonus below.
LEXICAL_WEIGHT = 0.35
RANK_WEIGHT = 0.08
TYPE_BONUS = 0.08
# A quoted sentence shorter than this (in words), or ending with a colon, is continued
# with the sentences after it in its passage.
_COMPLETE_WORDS = 12
# A short line with nothing substantive after it is a heading, not an answer.
LABEL_PENALTY = 0.3
# A passage that does not name what the question names (its rarer names) loses this much;
# names held by more than COMMON_NAME_SHARE of passages do not count.
NAME_PENALTY = 0.15
COMMON_NAME_SHARE = 0.1
# How much more a follow-up's own words weigh than the earlier question's.
FOLLOW_UP_WEIGHT = 3.0
# Sentences within this margin of the best one join the answer (up to three).
JOIN_MARGIN = 0.1
# Abstention. A question is declined when its best sentence scores below
# ABSTAIN_BELOW (or names something no article mentions, see `_unknown_names`).
# Calibration: the best-sentence score of every development question was
# printed (answering with the threshold off). Off-topic questions scored 0.14
# and 0.32, answerable ones 0.55 and up (most above 0.9). The threshold sits in
# that gap, nearer the off-topic side: a wrongly declined answer costs a user
# more than a weak one shown with its sources, and the held-out questions will
# spread wider than 26 samples do. Near-miss questions (a topic the articles
# cover, a detail they don't) score like answerable ones and are not caught by
# this threshold.
ABSTAIN_BELOW = 0.45

_NUMBER_QUESTION = re.compile(
    r"\b(how (much|many|long|often)|salar(y|ies)|earn|pay|paid|percent|percentage|rate|"
    r"cost|price|median|average|number of|by when|what year|when)\b"
)
_DEFINITION_QUESTION = re.compile(r"^(what|who) (is|are|does|do)\b|\bmean(s|ing)?\b|\bdefin")
_FOLLOW_UP = re.compile(r"^(and|what about|how about|what of|same for|or|but|also)\b")
_QUESTION_VERBS = frozenset(tokenize("mean meaning define definition role job purpose"))
_TIME_QUESTION = re.compile(r"\b(when|what year|by when|since when)\b")
# A figure is an amount, a share or a count; a bare year ("In 2025, ...") is not, unless
# the question asks when.
_HAS_FIGURE = re.compile(r"[$%€£]|\b(?!(?:19|20)\d\d\b)\d")
_HAS_NUMBER = re.compile(r"\d")
_DEFINING = re.compile(r"\b(is|are|refers to|means|involves|focuses on|designed to)\b")


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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Scored:
    hit: Hit
    sentence: int  # index within the passage
    row: int  # row in the index's sentence arrays
    score: float


def answer_question(
    index: Index,
    embedder: Embedder,
    question: str,
    *,
    top_k: int = 5,
    history: tuple[str, ...] | list[str] = (),
    mode: str = "hybrid",
    allowed: np.ndarray | None = None,
) -> Answer:
    """Answer a question with up to three verbatim sentences, or decline.

    ``history`` holds the conversation's earlier questions, oldest first: a
    short follow-up such as "and in Europe?" is searched together with the
    question before it.
    """
    started = time.perf_counter()
    question = " ".join(question.split())
    if not question:
        raise InputError("the question is empty; type a question about AI careers")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
    search_text, emphasis = resolve_follow_up(question, history)
    vector = embedder.encode_query(search_text)
    if emphasis:  # lean the search towards what the follow-up adds
        vector = vector + embedder.encode_query(emphasis)
        vector = vector / np.linalg.norm(vector)
    query = make_query(search_text, vector, emphasis=emphasis)
    hits = retrieve(index, query, top_k, mode=mode, allowed=allowed)
    chosen = _choose_sentences(index, query, hits, question)
    unknown = _unknown_names(index, question)
    answered = bool(chosen) and chosen[0].score >= ABSTAIN_BELOW and not unknown
    if not answered:
        chosen = []
    citations, text = _cite(hits, chosen)
    if not answered:
        text = DECLINED
        if unknown:
            text = f"The articles don't mention {', '.join(unknown)}. " + DECLINED.split(". ")[1]
    took_ms = (time.perf_counter() - started) * 1000
    return Answer(question, answered, text, citations, round(took_ms, 2))


def resolve_follow_up(question: str, history: tuple[str, ...] | list[str]) -> tuple[str, str]:
    """The text to search for a question, and the words to stress (a follow-up's own).

    >>> resolve_follow_up("and in Europe?", ["What do AI architects earn in the US?"])
    ('What do AI architects earn in the US? and in Europe?', 'and in Europe?')
    """
    previous = [h for h in (" ".join(str(h).split()) for h in history) if h]
    if not previous:
        return question, ""
    if _FOLLOW_UP.match(normalise(question)) or len(tokenize(question)) <= 2:
        return f"{previous[-1]} {question}", question
    return question, ""


def _choose_sentences(index: Index, query: Query, hits: list[Hit], question: str) -> list[_Scored]:
    if not hits:
        return []
    rare = math.log(1 + len(index.passages))  # the IDF of a token no passage holds
    weights = {t: index.idf.get(t, rare) for t in query.tokens}
    for token in query.emphasis:  # a follow-up's own words decide what is new in it
        weights[token] *= FOLLOW_UP_WEIGHT
    stressed = frozenset(query.emphasis)
    names = _distinctive_names(index, question)
    total = sum(weights.values()) or 1.0
    lowered = normalise(question)
    wants_figure = bool(_NUMBER_QUESTION.search(lowered))
    figure = _HAS_NUMBER if _TIME_QUESTION.search(lowered) else _HAS_FIGURE
    wants_definition = bool(_DEFINITION_QUESTION.search(lowered))
    subject = frozenset(query.tokens) - _QUESTION_VERBS if wants_definition else frozenset()
    scored: list[_Scored] = []
    for hit in hits:
        first = int(index.sentence_start[hit.position])
        count = len(hit.passage.sentences)
        cosines = index.sentence_vectors[first : first + count] @ query.vector
        heading = index.heading_tokens[hit.position]
        passage_words = heading.union(*index.sentence_tokens[first : first + count])
        # An answer about Google's exam is no answer to a question about AWS's.
        off_name = any(name.isdisjoint(passage_words) for name in names)
        for i in range(count):
            row = first + i
            words = index.sentence_tokens[row] | heading
            # The sentence before often names what this one is about ("Legacy systems ...
            # Effective strategies include ..."): its words count half.
            before = index.sentence_tokens[row - 1] if i else frozenset()
            lexical = sum(
                w if not synonyms(t).isdisjoint(words) else w / 2
                for t, w in weights.items()
                if not synonyms(t).isdisjoint(words | before)
            )
            lexical /= total
            score = float(cosines[i]) + LEXICAL_WEIGHT * lexical + RANK_WEIGHT / (1 + hit.rank)
            text = hit.passage.text[slice(*hit.passage.sentences[i])]
            if wants_figure:
                score += TYPE_BONUS if figure.search(text) else -TYPE_BONUS
            elif wants_definition:
                # "What is sustainable AI?" is answered by the line that starts with
                # "Sustainable AI" (or the definition after that label).
                opening = frozenset(tokenize(" ".join(text.split()[: len(subject) + 3])))
                if subject and subject <= opening:
                    score += TYPE_BONUS
                if _DEFINING.search(text):
                    score += TYPE_BONUS / 2
            if text.endswith("?"):
                score -= TYPE_BONUS  # a question in the text (FAQ) answers nothing itself
            elif len(text.split()) < _COMPLETE_WORDS / 2:
                # A label answers only through the line after it ("Sustainable AI:" and its
                # definition); a label followed by another label is a list of headings.
                after = hit.passage.sentences[i + 1] if i + 1 < count else None
                substantive = after and len(hit.passage.text[slice(*after)].split()) >= 6
                score -= TYPE_BONUS if substantive else LABEL_PENALTY
            if stressed and stressed.isdisjoint(words):
                score -= 2 * TYPE_BONUS  # an answer to the earlier question, not the follow-up
            if off_name:
                score -= NAME_PENALTY
            scored.append(_Scored(hit, i, row, score))
    scored.sort(key=lambda s: -s.score)
    best = scored[0]
    chosen = _with_continuation(index, best)
    for candidate in scored[1:]:
        if len(chosen) >= MAX_ANSWER_SENTENCES or candidate.score < best.score - JOIN_MARGIN:
            break
        vectors = index.sentence_vectors[[c.row for c in chosen]]
        if (vectors @ index.sentence_vectors[candidate.row]).max() > 0.9:
            continue  # the same sentence again, from an overlapping or repeated passage
        chosen.extend(_with_continuation(index, candidate)[: MAX_ANSWER_SENTENCES - len(chosen)])
    return chosen


def _with_continuation(index: Index, lead: _Scored) -> list[_Scored]:
    """A sentence, followed by what completes it when it only introduces an answer.

    Labels ("Sustainable AI:"), list headers and short headings match a question
    well but answer nothing alone; the answer is in the lines after them.
    """
    chosen = [lead]
    passage = lead.hit.passage
    words = len(passage.text[slice(*passage.sentences[lead.sentence])].split())
    following = lead.sentence + 1
    while (
        following < len(passage.sentences)
        and len(chosen) < MAX_ANSWER_SENTENCES
        and (
            words < _COMPLETE_WORDS or passage.text[passage.sentences[following - 1][1] - 1] == ":"
        )
    ):
        chosen.append(
            _Scored(lead.hit, following, lead.row + following - lead.sentence, lead.score)
        )
        words += len(passage.text[slice(*passage.sentences[following])].split())
        following += 1
    return chosen


def _names(question: str) -> list[tuple[str, list[str]]]:
    """Names in a question — capitalised words past the first, acronyms, figures — with tokens."""
    words = re.findall(r"[A-Za-z][\w'-]*|\d[\d,.]*", question)
    found = []
    for position, word in enumerate(words):
        named = (word[0].isupper() and position > 0) or word.isupper() or word[0].isdigit()
        if named and normalise(word) not in STOPWORDS and (tokens := tokenize(word)):
            found.append((word, tokens))
    return found


def _unknown_names(index: Index, question: str) -> list[str]:
    """Names in the question that no article mentions.

    A question about "Sweden" cannot be answered from articles that never name
    it, however close the rest of it is to them.
    """
    return [word for word, tokens in _names(question) if all(t not in index.idf for t in tokens)]


def _distinctive_names(index: Index, question: str) -> list[frozenset[str]]:
    """Token sets of the question's names that few passages hold (AWS, Mayo Clinic, Singapore).

    Names found in most passages ("AI") tell nothing apart and are left out.
    """
    common = math.log(1 + 1 / COMMON_NAME_SHARE)  # IDF of a token in that share of passages
    return [
        frozenset(tokens)
        for _, tokens in _names(question)
        if all(t in index.idf for t in tokens) and min(index.idf[t] for t in tokens) > common
    ]


def _cite(hits: list[Hit], chosen: list[_Scored]) -> tuple[tuple[Citation, ...], str]:
    """Citations (those used by the answer first, then the rest in rank order) and the answer."""
    used = list(dict.fromkeys(c.hit.position for c in chosen))
    order = used + [h.position for h in hits if h.position not in used]
    by_position = {h.position: h for h in hits}
    numbers = {position: n for n, position in enumerate(order, start=1)}
    citations = []
    for position in order:
        hit = by_position[position]
        spans = sorted(
            hit.passage.sentences[c.sentence] for c in chosen if c.hit.position == position
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
    quoted = sorted(chosen, key=lambda c: (numbers[c.hit.position], c.sentence))
    parts = [
        f"{c.hit.passage.text[slice(*c.hit.passage.sentences[c.sentence])]} "
        f"[{numbers[c.hit.position]}]"
        for c in quoted
    ]
    return tuple(citations), " ".join(parts)
