"""Lexical tokens for BM25 and sentence overlap: stems, numbers, currencies and acronyms kept."""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import Stemmer

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
