"""Lexical tokens for BM25 and sentence overlap: stems, numbers, currencies and acronyms kept."""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import Stemmer
from rapidfuzz import fuzz, process

# Numbers keep their decimal point and lose thousands separators ("$160,000" -> "160000");
# "27x" and "5+" stay whole; words keep inner + # . - only where they make a name (C++, C#).
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*[a-z+]?|[a-z][a-z0-9]*(?:\+\+|#)?")

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are aren as at be because been
    before being below between both but by can could did do does doing don down during each
    few for from further had has have having he her here hers herself him himself his how i
    if in into is isn it its itself just let me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would
    you your yours yourself yourselves gonna wanna r u ur whats whos hows
    """.split()  # noqa: SIM905
)


@cache
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def normalise(text: str) -> str:
    """Lower-case text with compatibility forms, curly quotes and dashes made plain."""
    text = unicodedata.normalize("NFKC", text).lower()
    return text.translate(str.maketrans("‘’“”–—", "''\"\"--"))


def tokenize(text: str) -> list[str]:
    """Stemmed content tokens of a text, in order.

    >>> tokenize("AI Architects earn $224,000 (17%) with MLOps & C++")
    ['ai', 'architect', 'earn', '224000', '17', 'mlop', 'c++']
    """
    found = _TOKEN.findall(normalise(text))
    words = [t.replace(",", "") if t[0].isdigit() else t for t in found]
    words = [w for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    return _stemmer().stemWords(words)


# Words people use for the same career notions as the articles, by stem. A question
# about what engineers "earn annually" must reach a table of "salary ... dollars/year".
_SYNONYM_GROUPS = (
    "earn salary pay paid compensation comp wage income",
    "annually annual yearly year",
    "job role position opening vacancy",
    "hire hiring recruit recruiting recruitment",
    "certification certificate credential",
    "skill competency competence",
    "company employer organization firm enterprise corporation business",
    "deploy deployment rollout roll",
    "exam test",
    "remote online home",
    "require need",
    "grow growth increase rise",
    "demand need",
    "quit leave attrition turnover",
    "cost price fee tuition",
    "valid validity expire renew renewal recertify recertification",
    "uk britain kingdom",
    "usa america",
    # shorthand people type
    "average avg",
    "prepare preparation prep",
    "year yrs",
    "developer dev",
    "engineer eng",
    "manager mgr",
)


@cache
def _synonyms() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for group in _SYNONYM_GROUPS:
        stems = set(_stemmer().stemWords(group.split()))
        for stem in stems:
            table.setdefault(stem, set()).update(stems)
    return {stem: frozenset(group) for stem, group in table.items()}


def synonyms(token: str) -> frozenset[str]:
    """The stems that mean the same as ``token`` here, itself included."""
    return _synonyms().get(token, frozenset((token,)))


def expand(tokens: list[str] | tuple[str, ...]) -> list[str]:
    """Synonym stems of the tokens that are not already among them, for searching."""
    present = set(tokens)
    extra = {s for t in tokens for s in synonyms(t)} - present
    return sorted(extra)


_WORD = re.compile(r"[A-Za-z]+")
# A word is corrected only when it is this long, unknown to the articles, and this similar
# (InDel ratio, 0-100) to a word they use with the same first letter: "salry" -> "salary",
# "interveiw" -> "interview", "engeneer" -> "engineer". Names the articles never mention
# ("Sweden", "Nigeria") have no such neighbour and stay as they are.
SPELLING_MIN_LETTERS = 5
SPELLING_MIN_RATIO = 85


def vocabulary(texts: list[str] | tuple[str, ...]) -> frozenset[str]:
    """The lower-case words of some texts: what spelling correction may correct towards."""
    return frozenset(w.lower() for text in texts for w in _WORD.findall(text))


def correct_spelling(text: str, known: frozenset[str], choices: tuple[str, ...]) -> str:
    """The text with misspelled words replaced by the closest word of the articles.

    >>> known = frozenset({"salary", "engineer", "europe"})
    >>> correct_spelling("Engeneer salry in Europe, Sweden", known, tuple(sorted(known)))
    'Engineer salary in Europe, Sweden'
    """

    def fix(match: re.Match[str]) -> str:
        word = match.group()
        lowered = word.lower()
        if len(word) < SPELLING_MIN_LETTERS or lowered in known:
            return word
        found = process.extractOne(
            lowered,
            choices,
            scorer=fuzz.ratio,
            score_cutoff=SPELLING_MIN_RATIO,
            processor=None,
        )
        if found is None or found[0][0] != lowered[0]:
            return word
        return found[0].capitalize() if word[0].isupper() else found[0]

    return _WORD.sub(fix, text)


_AFTER_PREPOSITION = re.compile(
    r"\b(?:in|across|from|at|like|including|such as|by) ([A-Z][a-z]+)\b"
)
_LOWER_WORD = re.compile(r"\b[a-z][a-z]+\b")


def proper_words(texts: list[str] | tuple[str, ...]) -> frozenset[str]:
    """Words the texts write only as names: capitalised after a preposition ("in Europe",
    "from Google"), never in lower case. A question typed in lower case still names them.

    >>> sorted(proper_words(["Salaries in Europe rise.", "Jobs in Tech and tech jobs."]))
    ['europe']
    """
    named = {m.group(1).lower() for text in texts for m in _AFTER_PREPOSITION.finditer(text)}
    lower = {w for text in texts for w in _LOWER_WORD.findall(text)}
    return frozenset(named - lower)
