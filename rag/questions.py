"""Questions: what a question asks for, read from its words.

A figure of some kind (money, a share, a duration, a year, any amount), a list,
a definition; the names it names and the roles it asks about. Answering scores
and declines by these.
"""

from __future__ import annotations

import math
import re

from rag.index import Index
from rag.tokens import STOPWORDS, normalise, synonyms, tokenize

# Names held by more than this share of passages ("AI") tell nothing apart.
COMMON_NAME_SHARE = 0.1

NUMBER_QUESTION = re.compile(
    r"\b(how (much|many|long|often)|salar(y|ies)|earn|pay|paid|percent|percentage|rate|"
    r"cost|costs|fee|fees|price|tuition|score|median|average|number of|by when|what year|when)\b"
)
# Questions that only a figure answers: a sentence without one is no answer to them, however
# close its words are ("How much does the exam cost?" answered by "The exam is advanced").
FIGURE_ONLY_QUESTION = re.compile(
    r"\b(how (much|many|long|big|large|high|fast)|salar(y|ies)|earn|paid|costs?|fees?|price|"
    r"tuition|pass(ing)? (mark|score)|(what|which) score|median|what year|by when|percent|"
    r"percentage|what share|what proportion|(pass|passing|success|failure|attrition|turnover|"
    r"retention|acceptance) rate)\b"
)
# Questions whose answer is a list: the introduction of a list answers them with its items.
LIST_QUESTION = re.compile(
    r"^(what|which) (are|were)\b|\b(steps|tips|ways|prerequisites|requirements|skills|tools|"
    r"reasons|examples|types|kinds|stages|strategies|techniques|practices|factors|benefits|"
    r"challenges|responsibilities|duties|options|platforms|languages|frameworks)\b"
    r"|^how (do|can|should|to|would)\b"
)
DEFINITION_QUESTION = re.compile(r"^(what|who) (is|are|does|do)\b|\bmean(s|ing)?\b|\bdefin")
QUESTION_VERBS = frozenset(tokenize("mean meaning define definition role job purpose"))
_TIME_QUESTION = re.compile(r"\b(when|what year|by when|since when)\b")
_SHARE_QUESTION = re.compile(
    r"\b(percent|percentage|what share|what proportion|(pass|passing|success|failure|attrition|"
    r"turnover|retention|acceptance) rate)\b|%"
)
# A figure is an amount, a share or a count. Digits inside a code ("AI-102", "MLS-C01",
# "A100") are no figure, nor is a bare year ("In 2025, ...") unless the question asks when.
_HAS_FIGURE = re.compile(r"[$%€£]|(?<![\w-])(?!(?:19|20)\d\d\b)\d")
HAS_NUMBER = re.compile(r"(?<![\w-])\d")
_HAS_SHARE = re.compile(r"%|\b(percent|half|a third|a quarter|one in \w+)")
# Pay and prices are amounts of money, unless the question compares them ("how much more").
_MONEY_QUESTION = re.compile(
    r"\b(salar(y|ies)|earn(s|ing)?|paid|pay|cost(s)?|fees?|tuition|price|compensation|wages?)\b"
    r"|\bhow much (do|does|did|can|could|would|will)\b.*\bmake\b"
)
# A duration is a number and a unit of time ("two hours", "4 to 6 years").
_DURATION_QUESTION = re.compile(r"\bhow (long|many (minutes|hours|days|weeks|months|years))\b")
_UNITS = ("minute", "hour", "day", "week", "month", "year")
_COUNT = r"(?:(?<![\w-])\d[\d,.]*|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve))"
_UNIT = r"(?:minutes?|hours?|days?|weeks?|months?|years?)"
# A number next to its unit ("180 minutes", "4 to 6 years", "6 to 12+ months"), or a unit
# heading a figure ("Duration (weeks): 4 – 12"); not "20–30% of their working hours".
_HAS_DURATION = re.compile(
    rf"{_COUNT}(?:\s*(?:–|-|to)\s*\d[\d,.]*)?\+?\s*{_UNIT}\b|\b{_UNIT}\)?:\s*\d",
    re.IGNORECASE,
)
_COMPARING = re.compile(
    r"\b(more|less|than|premium|compared?|vs|versus|increase[sd]?|grow(th)?|rise|gap|differ)"
)
_HAS_MONEY = re.compile(
    r"[$€£₹¥]|\b(usd|eur|gbp|inr|aed|sgd|cad|aud|dollars?|euros?|pounds?|rupees?|lakhs?)\b"
    r"|\d\s?k\b",
    re.IGNORECASE,
)
# Written out, a count or share still answers ("valid for two years", "half of them"), though
# a sentence with digits is preferred; "one" is left out: it is as often a pronoun.
_NUMBER_WORD = re.compile(
    r"\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
    r"forty|fifty|hundred|thousand|million|billion|dozen|half|twice|double|triple)\b"
)
_ROLE = re.compile(
    r"\b([a-z][\w+#-]*)\s+(engineer|architect|scientist|manager|developer|specialist|analyst|"
    r"researcher|consultant|designer|lead|officer)s?\b"
)
DEFINING = re.compile(r"\b(is|are|refers to|means|involves|focuses on|designed to)\b")


def figure_pattern(question: str) -> re.Pattern[str]:
    """What a figure looks like for this question: a share, money, a time, or any amount."""
    lowered = normalise(question)
    if _SHARE_QUESTION.search(lowered):
        return _HAS_SHARE
    if _MONEY_QUESTION.search(lowered) and not _COMPARING.search(lowered):
        return _HAS_MONEY
    if _DURATION_QUESTION.search(lowered) and not FIGURE_ONLY_QUESTION.search(
        _DURATION_QUESTION.sub(" ", lowered)
    ):
        return _HAS_DURATION
    return HAS_NUMBER if _TIME_QUESTION.search(lowered) else _HAS_FIGURE


def lacks_figure(question: str, quoted: list[str]) -> bool:
    """Whether a question only a figure answers got quotes without one.

    >>> lacks_figure("How much does the exam cost?", ["The exam is advanced."])
    True
    >>> lacks_figure("How long is the exam?", ["It lasts two hours."])
    False
    """
    lowered = normalise(question)
    if not FIGURE_ONLY_QUESTION.search(lowered):
        return False
    if duration := _DURATION_QUESTION.search(lowered):
        # "How many hours a week ...?" is not answered in weeks.
        unit = next((u for u in _UNITS if u in duration.group()), "")
        if any(_HAS_DURATION.search(t) and unit in t.lower() for t in quoted):
            return False
        # "How long is it and what's the fee?" is answered by the fee alone, too.
        lowered = _DURATION_QUESTION.sub(" ", lowered)
        if not FIGURE_ONLY_QUESTION.search(lowered):
            return True
    figure = figure_pattern(lowered)
    if figure is _HAS_FIGURE or figure is HAS_NUMBER:  # a count may be written out
        return not any(figure.search(text) or _NUMBER_WORD.search(text) for text in quoted)
    return not any(figure.search(text) for text in quoted)


def states_figure(text: str) -> bool:
    """Whether a line gives an amount, a share or a duration ("Europe: $95,000 annually")."""
    return bool(_HAS_MONEY.search(text) or "%" in text or _HAS_DURATION.search(text))


def names(question: str, proper: frozenset[str] = frozenset()) -> list[tuple[str, list[str]]]:
    """Names in a question — capitalised words past the first, acronyms, figures, and words
    the articles only ever write as names (``proper``: "europe", "google") — with tokens."""
    found = []
    for match in re.finditer(r"[A-Za-z][\w'-]*|\d[\d,.]*", question):
        word = match.group()
        before = question[: match.start()].rstrip(" \"'(")
        opening = not before or before.endswith((".", "?", "!", ":"))  # a sentence's first word
        named = (word[0].isupper() and not opening) or word.isupper() or word[0].isdigit()
        named = named or word.lower() in proper
        if named and normalise(word) not in STOPWORDS and (tokens := tokenize(word)):
            found.append((word, tokens))
    return found


def unknown_names(index: Index, question: str) -> list[str]:
    """Names in the question that no article mentions.

    A question about "Sweden" cannot be answered from articles that never name
    it, however close the rest of it is to them.
    """
    return [word for word, tokens in names(question) if all(t not in index.idf for t in tokens)]


def distinctive_names(index: Index, question: str) -> list[frozenset[str]]:
    """Token sets of the question's names that few passages hold (AWS, Mayo Clinic, Singapore).

    Names found in most passages ("AI") tell nothing apart and are left out.
    """
    common = math.log(1 + 1 / COMMON_NAME_SHARE)  # IDF of a token in that share of passages
    return [
        frozenset(tokens)
        for _, tokens in names(question, index.proper_words)
        if all(t in index.idf for t in tokens) and min(index.idf[t] for t in tokens) > common
    ]


def role_kinds(index: Index, question: str) -> frozenset[str]:
    """The words that tell the roles a question asks about from the rest ("prompt", "network").

    The word before a role noun ("prompt engineer", "network architect") counts when the
    articles use the two together and the word is not in most passages ("AI", "ML"): an
    answer about AI engineers is no answer to a question about prompt engineers.
    """
    common = math.log(1 + 1 / COMMON_NAME_SHARE)
    found = set()
    for match in _ROLE.finditer(normalise(question)):
        head = tokenize(match.group(2))
        kind = tokenize(match.group(1))
        if not head or not kind:
            continue
        word = kind[-1]
        if index.idf.get(word, 0) > common and any(
            word in tokens and head[0] in tokens for tokens in index.sentence_tokens
        ):
            found.add(word)
    return frozenset(found)


# The words that frame a career question rather than say what it is about: "How much do
# dentists earn?" is about dentists, "What skills does a good chef need?" about chefs.
_FRAME = frozenset(
    tokenize(
        """how much many long often what which who whom when where why does do did is are was
        can could should would will get got make makes made earn earns earning salary
        salaries pay pays paid cost costs price fee fees skill skills need needs require
        required requirement requirements certification certifications certificate
        qualification qualifications job jobs career careers work works working become hire
        hired hiring good best top typical average typically usually tip tips way ways learn
        start thing things people person someone year years day days week month hour time
        take takes kind kinds type types like really actually also help helps"""
    )
)


def unknown_topic(index: Index, question: str) -> bool:
    """Whether every word that says what the question is about is unknown to the articles,
    even as a synonym: they cannot answer it, however well its frame matches theirs.

    The frame ("how much ... earn", "what skills ... need") is left out of the test; a
    question with nothing but frame words is not declined by it.
    """
    topic = [t for t in tokenize(question) if t not in _FRAME]
    return bool(topic) and all(_unknown(index, t) for t in topic)


def unknown_share(index: Index, tokens: tuple[str, ...] | list[str]) -> float:
    """The share of the tokens' IDF weight on tokens the articles never use, even as a
    synonym (a token no passage holds weighs as much as the rarest)."""
    rare = math.log(1 + len(index.passages))
    weights = {t: index.idf.get(t, rare) for t in tokens}
    unknown = sum(w for t, w in weights.items() if _unknown(index, t))
    return unknown / (sum(weights.values()) or 1.0)


def _unknown(index: Index, token: str) -> bool:
    return all(s not in index.idf for s in synonyms(token))
