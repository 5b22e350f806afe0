"""Scoring: candidate quotes as named features, scored by the fitted answer model.

A candidate is a unit of a retrieved passage (a sentence, a table row, a list
item) with the lines that complete it. Its features are named floats; the
answer model (`rag/models/answer.json`, made by `rag fit`) holds the weights:
a ranker that scores each candidate, and a calibrated classifier that turns
the best candidate and the question's evidence into the probability that the
articles answer the question. Code here defines features; it holds no weight.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from rag.analysis import Question
from rag.chunking import Passage
from rag.errors import SettingsError
from rag.figures import FIGURE_KINDS, HAS_DIGIT, states, states_any
from rag.index import Index
from rag.retrieval import Hit
from rag.tokens import synonyms, tokenize

MODEL_FORMAT = 2
SHIPPED_MODEL = Path(__file__).parent / "models" / "answer.json"
MAX_QUOTES = 3  # units an answer quotes at most (a list item brings its introduction)
# A line this short (in words) that states no figure introduces what follows it.
_COMPLETE_WORDS = 12

CANDIDATE_FEATURES = (
    "cosine",  # the unit's embedding against the question's
    "cosine_gap",  # how far below the best unit's cosine among the candidates
    "passage_cosine",  # the unit's passage against the question
    "reciprocal_rank",  # 1 / (1 + fused rank of its passage)
    "cosine_rank",  # 1 / (1 + rank of its cosine among the candidates)
    "coverage",  # IDF share of the searched words in the unit, its heading and intro
    "coverage_unit",  # ... in the unit alone
    "coverage_heading",  # ... in its heading alone
    "coverage_own",  # IDF share of the question's own words (a follow-up's) in the unit
    "missing_rare",  # IDF of the rarest searched word the quote and its heading lack, 0-1
    "own_missing_rare",  # ... of the question's own words
    "kind_stated",  # the question wants a figure and the quote states one of that kind
    "kind_missing",  # the question wants a figure and the quote states none of that kind
    "states_figure",  # the quote states an amount, a share or a duration
    "has_digit",
    "opens_with_subject",  # a definition question, and the unit opens with its subject
    "defining_verb",  # a definition question, and the unit says "is", "refers to" ...
    "list_intro",  # a list question, and the unit introduces a list (ends with ":")
    "is_question",  # the unit is itself a question (an FAQ's)
    "is_label",  # a short line without a figure: a heading or a label
    "ends_colon",
    "words",  # log(1 + words of the quote)
    "position",  # the unit's place in its passage, 0 first to 1 last
    "continued",  # the unit needs the lines after it to read as an answer
    "role_missed",  # the question names a role the unit and its heading do not
    "name_missed",  # the question names a rare name its passage does not hold
    "name_in_unit",  # every rare name the question names is in the unit
    "emphasis_missed",  # a follow-up whose own words the unit does not hold
    "focus_missed",  # IDF share of what the question asks about ("passing score") not there
    "fused_share",  # its passage's fused retrieval score over the best passage's
    "table_row",  # the unit is a row of a table
    "list_item",  # the unit is an item of a list
    "list_wanted_item",  # a list question, and the unit is a list item or table row
    "context_cosine",  # the unit under its title and section path against the question
)
QUESTION_FEATURES = (
    "best_score",  # the ranker's score of the best candidate
    "margin",  # ... less the second best's
    "best_cosine",
    "best_coverage",
    "best_coverage_own",
    "best_kind_missing",
    "best_role_missed",
    "best_name_missed",
    "best_missing_rare",
    "best_own_missing_rare",
    "best_kind_stated",
    "best_focus_missed",
    "max_cosine",  # the best cosine of any candidate
    "top_passage_cosine",
    "unknown_name",  # the question names something no article mentions
    "unknown_share",  # its IDF weight on words no article uses
    "unknown_meaning",  # how far its meaning moves without those words
    "wants_figure",
    "follow_up",
    "question_words",  # log(1 + content words)
)
_FEATURE_INDEX = {name: n for n, name in enumerate(CANDIDATE_FEATURES)}
DEFINING = re.compile(r"\b(is|are|refers to|means|involves|focuses on|designed to)\b", re.I)
_FRAME_WORDS = frozenset(tokenize("mean meaning define definition role job purpose stand"))


@dataclass(frozen=True)
class Candidate:
    """A unit that could lead the answer, the lines that complete it, and its features."""

    hit: Hit
    sentence: int  # the unit's index within its passage
    row: int  # its row in the index's sentence arrays
    units: tuple[int, ...]  # sentences quoted when it leads: itself and its continuation
    features: np.ndarray  # in the order of CANDIDATE_FEATURES

    def text(self) -> str:
        passage = self.hit.passage
        return " ".join(passage.text[slice(*passage.sentences[i])] for i in self.units)

    def feature(self, name: str) -> float:
        return float(self.features[_FEATURE_INDEX[name]])

    def named(self) -> dict[str, float]:
        return {
            n: round(float(v), 4) for n, v in zip(CANDIDATE_FEATURES, self.features, strict=True)
        }


@dataclass(frozen=True)
class Linear:
    """A standardised linear score: ``coef · (x - mean) / scale + intercept``."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    @classmethod
    def from_dict(cls, data: dict) -> Linear:
        return cls(
            np.array(data["mean"], dtype=np.float64),
            np.array(data["scale"], dtype=np.float64),
            np.array(data["coef"], dtype=np.float64),
            float(data["intercept"]),
        )


@dataclass(frozen=True)
class AnswerModel:
    """The fitted answer model: a candidate ranker and a calibrated answer/decline decision."""

    version: str
    ranker: Linear
    ranker_platt: tuple[float, float]  # P(a quote answers) = 1 / (1 + exp(a * score + b))
    decider: Linear
    platt: tuple[float, float]  # P(answered) = 1 / (1 + exp(a * score + b))
    threshold: float  # answer when P(answered) is at least this
    # A further unit joins when its quote_probability is at least this share of the best's.
    join_share: float
    data: dict

    def rank(self, features: np.ndarray) -> np.ndarray:
        return self.ranker.score(features)

    def quote_probability(self, score: float) -> float:
        return float(platt_probability(self.ranker_platt, score))

    def joins(self, score: float, best: float) -> bool:
        """Whether a further unit scored ``score`` joins an answer led by one scored ``best``:
        when the ranker finds it nearly as likely to hold the answer, it cannot tell them
        apart, and the reader gets both."""
        return self.quote_probability(score) >= self.join_share * self.quote_probability(best)

    def probability(self, question_features: np.ndarray) -> float:
        return float(platt_probability(self.platt, self.decider.score(question_features)))

    @classmethod
    def from_dict(cls, data: dict) -> AnswerModel:
        if data.get("format") != MODEL_FORMAT:
            raise SettingsError(
                f"the answer model has format {data.get('format')!r}, this version reads "
                f"{MODEL_FORMAT}; run `rag fit` to make one"
            )
        if (
            tuple(data["ranker"]["features"]) != CANDIDATE_FEATURES
            or tuple(data["decider"]["features"]) != QUESTION_FEATURES
        ):
            raise SettingsError(
                "the answer model was fitted on other features than this version computes; "
                "run `rag fit` to refit it"
            )
        return cls(
            version=str(data["version"]),
            ranker=Linear.from_dict(data["ranker"]),
            ranker_platt=(float(data["ranker"]["platt"][0]), float(data["ranker"]["platt"][1])),
            decider=Linear.from_dict(data["decider"]),
            platt=(float(data["decider"]["platt"][0]), float(data["decider"]["platt"][1])),
            threshold=float(data["decider"]["threshold"]),
            join_share=float(data["join_share"]),
            data=data,
        )


def platt_probability(platt: tuple[float, float], score: float | np.ndarray) -> np.ndarray:
    """Platt scaling: ``1 / (1 + exp(a * score + b))`` for ``platt = (a, b)``."""
    a, b = platt
    return 1 / (1 + np.exp(a * np.asarray(score, dtype=np.float64) + b))


def load_model(path: Path | None = None) -> AnswerModel:
    """The answer model at ``path``, or the one the package ships."""
    if path is None:
        return _shipped_model()
    try:
        return AnswerModel.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"the answer model {path} cannot be read ({exc})") from None


@cache
def _shipped_model() -> AnswerModel:
    return load_model(SHIPPED_MODEL)


def candidates(
    index: Index, question: Question, vector: np.ndarray, hits: list[Hit]
) -> list[Candidate]:
    """Every unit of every hit, with its features (see `CANDIDATE_FEATURES`)."""
    if not hits:
        return []
    rare = math.log(1 + len(index.passages))  # the IDF of a token no passage holds
    searched = _weights(index, question.search_tokens, rare)
    own = _weights(index, question.emphasis or question.tokens, rare)
    focus = _weights(index, question.focus, rare)
    top_score = max(h.score for h in hits) or 1.0
    stressed = frozenset(question.emphasis)
    subject = frozenset(question.tokens) - _FRAME_WORDS
    rows: list[tuple[Hit, int, int, tuple[int, ...], list[float]]] = []
    quoted: set[str] = set()
    for hit in hits:
        passage = hit.passage
        first = int(index.sentence_start[hit.position])
        count = len(passage.sentences)
        cosines = index.sentence_vectors[first : first + count] @ vector
        context_cosines = index.context_vectors[first : first + count] @ vector
        heading = index.heading_tokens[hit.position]
        passage_words = index.passage_tokens[hit.position]
        # A name no article mentions is missing from every passage, this one's too.
        name_missed = bool(question.unknown_names) or any(
            name.isdisjoint(passage_words) for name in question.distinctive
        )
        introduction: frozenset[str] = frozenset()
        for i in range(count):
            row = first + i
            unit_words = index.sentence_tokens[row]
            words = unit_words | heading
            # The line before often names what this one is about, and a list's
            # introduction what every item is: their words count half.
            before = (index.sentence_tokens[row - 1] if i else frozenset()) | introduction
            text = passage.text[slice(*passage.sentences[i])]
            if text.endswith(":"):
                introduction = unit_words
            units = continuation(passage, i, question.wants)
            cosine = float(cosines[i])
            if not can_lead(text):
                # A heading, bare label or the text's own question is not quoted: the
                # lines it introduces are, scored with it as their context.
                units = units[1:]
                if not units:
                    continue
                before = before | unit_words
                unit_words = index.sentence_tokens[first + units[0]]
                words = unit_words | heading
                text = passage.text[slice(*passage.sentences[units[0]])]
                cosine = float(cosines[units[0]])
            quote = " ".join(passage.text[slice(*passage.sentences[j])] for j in units)
            if quote in quoted:  # passages overlap: a better-ranked hit offers it already
                continue
            quoted.add(quote)
            quote_words = words.union(*(index.sentence_tokens[first + j] for j in units))
            figure = question.wants in FIGURE_KINDS
            shape = passage.shape(units[0]).kind
            stated = figure and states(question.wants, quote)
            label = is_label(text)
            rows.append(
                (
                    hit,
                    i,
                    row,
                    units,
                    [
                        cosine,
                        0.0,  # cosine_gap, set below
                        float(hit.dense),
                        1 / (1 + hit.rank),
                        0.0,  # cosine_rank, set below
                        _coverage(searched, quote_words, before),
                        _coverage(searched, unit_words, frozenset()),
                        _coverage(searched, heading, frozenset()),
                        _coverage(own, quote_words, before),
                        _missing(searched, quote_words, rare),
                        _missing(own, quote_words, rare),
                        float(stated),
                        float(figure and not stated),
                        float(states_any(quote)),
                        float(bool(HAS_DIGIT.search(quote))),
                        float(
                            question.wants == "definition"
                            and bool(subject)
                            and subject <= _opening(text, len(subject))
                        ),
                        float(question.wants == "definition" and bool(DEFINING.search(text))),
                        float(question.wants == "list" and text.endswith(":")),
                        float(text.endswith("?")),
                        float(label),
                        float(text.endswith(":")),
                        math.log1p(len(quote.split())),
                        i / max(count - 1, 1),
                        float(len(units) > 1),
                        float(bool(question.roles) and not question.roles <= quote_words),
                        float(name_missed),
                        float(
                            bool(question.distinctive)
                            and all(n <= quote_words for n in question.distinctive)
                        ),
                        float(bool(stressed) and stressed.isdisjoint(quote_words)),
                        1 - _coverage(focus, quote_words, before) if focus else 0.0,
                        hit.score / top_score,
                        float(shape == "table_row"),
                        float(shape == "list_item"),
                        float(question.wants == "list" and shape != "sentence"),
                        float(context_cosines[units[0]]),
                    ],
                )
            )
    if not rows:
        return []
    matrix = np.array([r[4] for r in rows], dtype=np.float64)
    cosine = matrix[:, _FEATURE_INDEX["cosine"]]
    matrix[:, _FEATURE_INDEX["cosine_gap"]] = cosine - cosine.max()
    order = np.argsort(-cosine, kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(len(order))
    matrix[:, _FEATURE_INDEX["cosine_rank"]] = 1 / (1 + ranks)
    return [
        Candidate(hit, units[0], row + units[0] - i, units, matrix[n])
        for n, (hit, i, row, units, _) in enumerate(rows)
    ]


def question_features(
    question: Question, ranked: list[Candidate], scores: np.ndarray, hits: list[Hit]
) -> np.ndarray:
    """The evidence the decision to answer reads (see `QUESTION_FEATURES`)."""
    if ranked:
        best = ranked[0]
        second = float(scores[1]) if len(scores) > 1 else float(scores[0]) - 1.0
        head = [float(scores[0]), float(scores[0]) - second]
        of_best = [
            best.feature(n)
            for n in (
                "cosine",
                "coverage",
                "coverage_own",
                "kind_missing",
                "role_missed",
                "name_missed",
                "missing_rare",
                "own_missing_rare",
                "kind_stated",
                "focus_missed",
            )
        ]
        of_best.append(max(c.feature("cosine") for c in ranked))
    else:
        head, of_best = [-10.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    return np.array(
        [
            *head,
            *of_best,
            max((h.dense for h in hits), default=0.0),
            float(bool(question.unknown_names)),
            question.unknown_share,
            question.unknown_meaning,
            float(question.wants_figure),
            float(question.follow_up),
            math.log1p(len(question.tokens)),
        ],
        dtype=np.float64,
    )


def rank(
    question: Question, pool: list[Candidate], scores: np.ndarray, hits: list[Hit]
) -> tuple[list[Candidate], np.ndarray, np.ndarray]:
    """The candidates best first, their scores in that order, and the question's evidence."""
    order = np.argsort(-scores, kind="stable")
    ranked = [pool[i] for i in order]
    return ranked, scores[order], question_features(question, ranked, scores[order], hits)


def continuation(passage: Passage, lead: int, wants: str) -> tuple[int, ...]:
    """The unit at ``lead`` and the lines that complete it when it only introduces them.

    Labels ("Sustainable AI:"), list introductions and short lines read as
    nothing alone; the answer is in the lines after them, up to the next label.
    A short line that states a figure ("Europe: $95,000–$130,000 annually") is
    complete.
    """
    spans = passage.sentences
    line = passage.text[slice(*spans[lead])]
    figure = states(wants, line) if wants in FIGURE_KINDS else states_any(line)
    if figure and not line.endswith(":"):
        return (lead,)
    label = is_label(line)
    words = len(line.split())
    chosen = [lead]
    following = lead + 1
    while following < len(spans) and len(chosen) < MAX_QUOTES:
        previous = passage.text[slice(*spans[following - 1])]
        if not (label or words < _COMPLETE_WORDS or previous.endswith(":")):
            break
        text = passage.text[slice(*spans[following])]
        if is_label(text) and not previous.endswith(":") and (len(chosen) > 1 or not label):
            break  # the next item's label: this one's lines are all there
        chosen.append(following)
        words += len(text.split())
        following += 1
    return tuple(chosen)


def can_lead(text: str) -> bool:
    """Whether a unit may lead an answer: not a heading or bare label ("MLOps Engineer"),
    not a question the text asks itself (an FAQ's); a list's introduction may."""
    return text.endswith(":") or not (is_label(text) or text.endswith("?"))


def is_label(text: str) -> bool:
    """A heading-like line ("System Performance Metrics", "Sustainable AI:"): short, no figure."""
    return len(text.split()) < _COMPLETE_WORDS / 2 and not HAS_DIGIT.search(text)


def _opening(text: str, subject_words: int) -> frozenset[str]:
    """The stems of a unit's first words: where a definition names what it defines."""
    return frozenset(tokenize(" ".join(text.split()[: subject_words + 3])))


def _weights(index: Index, tokens: tuple[str, ...], rare: float) -> list[tuple[frozenset, float]]:
    merged: dict[str, float] = {}
    for token in tokens:
        merged[token] = merged.get(token, 0.0) + index.idf.get(token, rare)
    return [(synonyms(t), w) for t, w in merged.items()]


def _missing(weights: list[tuple[frozenset, float]], words: frozenset[str], rare: float) -> float:
    return max((w for stems, w in weights if stems.isdisjoint(words)), default=0.0) / rare


def _coverage(
    weights: list[tuple[frozenset, float]], words: frozenset[str], before: frozenset[str]
) -> float:
    total = sum(w for _, w in weights) or 1.0
    found = 0.0
    for stems, weight in weights:
        if not stems.isdisjoint(words):
            found += weight
        elif not stems.isdisjoint(before):
            found += weight / 2
    return found / total
