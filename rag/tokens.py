"""Lexical tokens for BM25 and sentence overlap: stems, numbers, currencies and acronyms kept."""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache
from pathlib import Path

import Stemmer
from rapidfuzz import process
from rapidfuzz.distance import OSA

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


# "LLMs", "GPUs", "KPIs": the plural of an acronym is the acronym (the stemmer leaves them).
_PLURAL_ACRONYM = re.compile(r"\b([A-Z]{2,})s\b")
# "U.S." and "U.K." are the words "US" and "UK", not single letters (which are dropped).
_INITIALISM = re.compile(r"\b(?:[A-Za-z]\.){2,}")
# "83(b)", "401(k)", "Schedule A(u)": a bracketed letter is part of the name before it
# (single letters are otherwise dropped, and "A(r)" and "A(u)" would read the same).
_BRACKETED_LETTER = re.compile(r"\b([A-Za-z0-9]+)\(([A-Za-z])\)")
# "Series B", "Plan B": a capital letter alone after a capitalised word names a kind of it;
# it is read as both the word and the word with its letter ("series", "seriesb").
_LETTER_NAME = re.compile(r"\b([A-Z][a-z]+) ([A-HJ-Z])\b(?![.'’])")


def tokenize(text: str) -> list[str]:
    """Stemmed content tokens of a text, in order.

    >>> tokenize("AI Architects earn $224,000 (17%) with MLOps & C++ for LLMs")
    ['ai', 'architect', 'earn', '224000', '17', 'mlop', 'c++', 'llm']
    >>> tokenize("in the U.S. and the US")
    ['us', 'us']
    >>> tokenize("Series B, an 83(b) election, Schedule A(u)")
    ['seri', 'seriesb', '83b', 'elect', 'schedul', 'au']
    """
    return list(_stems(text))


@lru_cache(maxsize=1 << 16)  # the same units are scored again for every question
def _stems(text: str) -> tuple[str, ...]:
    text = _INITIALISM.sub(lambda m: m.group().replace(".", ""), text)
    text = _BRACKETED_LETTER.sub(r"\1\2", text)
    text = _LETTER_NAME.sub(r"\1 \1\2", text)
    found = _TOKEN.findall(normalise(_PLURAL_ACRONYM.sub(r"\1", text)))
    words = [t.replace(",", "") if t[0].isdigit() else t for t in found]
    words = [w for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    return tuple(_stemmer().stemWords(words))


# Words people use for the same career notions as the articles, by stem: a data file,
# one group a line, checked for collisions by the tests.
SYNONYMS_FILE = "synonyms.txt"


def synonym_groups() -> list[list[str]]:
    """The synonym groups of ``rag/data/synonyms.txt``, as words."""
    text = (Path(__file__).parent / "data" / SYNONYMS_FILE).read_text(encoding="utf-8")
    return [line.split() for line in text.splitlines() if line.strip() and line[0] != "#"]


@cache
def _synonyms() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for group in synonym_groups():
        stems = set(_stemmer().stemWords(group))
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
# A word is corrected only when it is this long, unknown to the articles, and one typo
# (two from LONG_WORD letters) from a word they use with the same first letter: a letter
# left out, added, changed or two swapped ("salry", "pyhton", "interveiw", "certifcation").
# Names the articles never mention ("Sweden", "Nigeria") have no such neighbour.
SPELLING_MIN_LETTERS = 5
SPELLING_LONG_WORD = 8


def vocabulary(texts: list[str] | tuple[str, ...]) -> frozenset[str]:
    """The lower-case words of some texts: what spelling correction may correct towards."""
    return frozenset(w.lower() for text in texts for w in _WORD.findall(text))


@cache
def english_stems() -> frozenset[str]:
    """Stems of an English dictionary (the ``english-words`` lists): words, not typos."""
    from english_words import get_english_words_set

    words = get_english_words_set(["web2", "gcide"], lower=True, alpha=True)
    return frozenset(_stemmer().stemWords(sorted(words)))


def correct_spelling(text: str, known: frozenset[str], choices: tuple[str, ...]) -> str:
    """The text with misspelled words replaced by the closest word of the articles.

    >>> known = frozenset({"salary", "engineer", "europe", "finds"})
    >>> correct_spelling("Engeneer salry in Europe, Sweden, fines", known, tuple(sorted(known)))
    'Engineer salary in Europe, Sweden, fines'
    """

    def fix(match: re.Match[str]) -> str:
        word = match.group()
        lowered = word.lower()
        if len(word) < SPELLING_MIN_LETTERS or lowered in known:
            return word
        if _stemmer().stemWord(lowered) in english_stems():
            return word  # a real word the articles don't use ("fines"), not a typo
        found = process.extractOne(
            lowered,
            choices,
            scorer=OSA.distance,
            score_cutoff=1 if len(word) < SPELLING_LONG_WORD else 2,
            processor=None,
        )
        if found is None or found[0][0] != lowered[0]:
            return word
        return found[0].capitalize() if word[0].isupper() else found[0]

    return _WORD.sub(fix, text)


_AFTER_LINK = re.compile(
    r"(?:\b(?:in|across|from|at|like|including|such as|by|and)|[a-z],) ([A-Z][a-z]+)\b"
)
_LOWER_WORD = re.compile(r"\b[a-z][a-z]+\b")


def proper_words(sentences: list[str] | tuple[str, ...]) -> frozenset[str]:
    """Words the sentences write only as names: capitalised in running text after a
    preposition, "and" or a comma ("in Europe", "from Google", "China, Japan"), never in
    lower case. A question typed in lower case still names them. Title-case lines
    (headings, table headers) capitalise every word and are not read.

    >>> sorted(proper_words(["Pay in Europe rises each year.", "Jobs in Tech and tech jobs."]))
    ['europe']
    """
    named = set()
    for sentence in sentences:
        words = _WORD.findall(sentence)
        if words and sum(w[0].isupper() for w in words) < len(words) / 2:
            named.update(m.group(1).lower() for m in _AFTER_LINK.finditer(sentence))
    lower = {w for sentence in sentences for w in _LOWER_WORD.findall(sentence)}
    return frozenset(named - lower)
