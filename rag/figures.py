"""Figures: what kind of figure a question asks for, and which kinds a quote states.

Regular expressions compute features here and decide nothing on their own: the
answer model (`rag.scoring`) weighs whether a quote states the kind of figure a
question asks for against everything else it knows.
"""

from __future__ import annotations

import re
from functools import lru_cache

KINDS = (
    "amount",
    "share",
    "duration",
    "date",
    "count",
    "list",
    "definition",
    "yesno",
    "comparison",
    "other",
)
FIGURE_KINDS = ("amount", "share", "duration", "date", "count")

_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
    "hundred|thousand|million|billion|dozen|a few|several|a couple of|a|an|half an?"
)
_COUNT = rf"(?:(?<![\w-])\d[\d,.]*\+?|\b(?:{_NUMBER_WORDS})\b)"
_UNIT = (
    r"(?:minutes?|mins?|hours?|hrs?|h|days?|weeks?|wks?|months?|mos?|years?|yrs?|decades?|"
    r"semesters?|quarters?)"
)

# Money: a currency sign or code next to a number, a number with k/m/lakh/LPA, or "free".
_CURRENCY = (
    r"[$€£₹¥]|\b(?:usd|eur|gbp|inr|aed|sgd|cad|aud|chf|jpy|cny|sek|nok|dkk|nzd|zar|brl|"
    r"dollars?|euros?|pounds?|rupees?|francs?|yen)\b"
)
_HAS_AMOUNT = re.compile(
    rf"(?:{_CURRENCY})\s?\d|\d[\d,.]*\s?(?:{_CURRENCY})|\b\d[\d,.]*\s?(?:k|m|mn|bn|lakhs?|lpa|crores?)\b"
    r"|\bfree\b|\bno (?:cost|charge|fee)\b|\bat no cost\b",
    re.IGNORECASE,
)
_HAS_SHARE = re.compile(
    r"%|\bper ?cent\b|\bpercentage points?\b|\bhalf\b"
    r"|\b(?:a|one)[- ](?:third|quarter|fifth|tenth)\b"
    r"|\b(?:two|three|four)[- ](?:thirds|quarters|fifths)\b|\b(?:one|1) (?:in|out of) \w+\b"
    r"|\bmajority\b",
    re.IGNORECASE,
)
_HAS_DURATION = re.compile(
    rf"{_COUNT}(?:\s*\(\d[\d,.]*\))?(?:\s*(?:–|-|to|or)\s*\d[\d,.]*)?\+?[\s-]*{_UNIT}\b"
    r"|\b\d+(?:\.\d+)?\s?(?:h|hr|hrs|min|mins)\b"
    rf"|\b{_UNIT}\)?:\s*\d|\b(?:annual(?:ly)?|yearly|monthly|weekly|quarterly|biannual(?:ly)?|"
    r"every (?:year|month|week|quarter))\b",
    re.IGNORECASE,
)
_HAS_DATE = re.compile(
    r"\b(?:19|20)\d\d\b|\b(?:january|february|march|april|may|june|july|august|september|"
    r"october|november|december)\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b",
    re.IGNORECASE,
)
# "When" is answered as often by a time relative to something else as by a date: "within
# 30 days of the grant", "6-7 months before the term ends", "on the 15th", "on Mondays",
# "on your last day", "at the end of the year".
_HAS_RELATIVE_TIME = re.compile(
    r"\b(?:within|before|after|prior to|every|once (?:a|per|every)|until|following|ago|later)\b"
    r"|\b(?:[1-9]|[12]\d|3[01])(?:st|nd|rd|th)\b(?! percentile)"
    r"|\b(?:mon|tues|wednes|thurs|fri|satur|sun)days?\b"
    r"|\b(?:last|first|final|same) (?:day|week|month)\b|\bend of (?:the |each |every )?"
    r"(?:year|month|quarter|week|day|fiscal year|term|period)\b",
    re.IGNORECASE,
)


# These words make a time only with a duration beside them ("within 30 days").
_CONNECTIVES = ("within", "before", "after", "prior", "every", "once", "until", "following")


def _states_date(text: str) -> bool:
    if _HAS_DATE.search(text):
        return True
    relative = _HAS_RELATIVE_TIME.search(text)
    return bool(relative) and (
        bool(_HAS_DURATION.search(text)) or not relative.group().lower().startswith(_CONNECTIVES)
    )


# A count: a number that is not part of a code ("AI-102", "A100"), nor money ("$165")
# nor a share ("35%").
_HAS_COUNT = re.compile(
    r"(?<![\w$€£₹¥.,-])\d(?![\d,.]*\s?(?:%|k\b|m\b|lpa\b|per ?cent\b|usd\b|dollars?\b))"
    rf"|\b(?:{_NUMBER_WORDS.replace('|a|an|half an?', '')})\b",
    re.IGNORECASE,
)
HAS_DIGIT = re.compile(r"(?<![\w-])\d")

_STATES = {
    "amount": _HAS_AMOUNT.search,
    "share": _HAS_SHARE.search,
    "duration": _HAS_DURATION.search,
    "date": _states_date,
    "count": _HAS_COUNT.search,
}

# "How much" as the question's own word, not in a clause ("what determines how much ...").
_HOW_MUCH = r"^(?!(?:what|which|why|who|where)\b).*\bhow much\b"
_ASKS_SHARE = re.compile(
    r"\b(percent|percentage|what share|what proportion|what fraction|how many of|"
    r"(pass|passing|success|failure|attrition|turnover|retention|acceptance|approval) rate)\b|%"
    # a part of a whole ("how much of my grant vests"), equity, a weight, or a change
    rf"|{_HOW_MUCH} (of|equity|weight)\b"
    rf"|{_HOW_MUCH}.*\b((go|goes|gone|went|going) (up|down)|improved?|increased?|grow|grew|"
    r"grown|rise|rose|risen|drop(ped)?|fall|fell|fallen|decreased?)\b"
)
_ASKS_AMOUNT = re.compile(
    r"\b(salar(y|ies)|earn(s|ing|ings)?|paid|pay|pays|cost(s)?|fees?|tuition|price[sd]?|"
    r"compensation|wages?|income|bonus(es)?|budget|cheap(est|er)?|expensive|afford|"
    r"how much (money|cash))\b"
    r"|\bhow much (do|does|did|can|could|would|will|is|are)\b.*\b(make|get|cost)\b"
)
_ASKS_DURATION = re.compile(
    rf"\bhow (long|many {_UNIT})\b|\bhow (often|soon|quickly|fast)\b"
    r"|\bhow far (ahead|in advance|before)\b|\btime-to-\w+"
    rf"|{_HOW_MUCH} (\w+ )?experience\b"
    r"|\bwhat (durations?|lengths?|periods?|timelines?)\b"
)
# "When" asks for a date as the question word ("when is ...", "..., when do we ..."), not
# in a clause ("what happens if I don't hand back my laptop when I leave").
_ASKS_DATE = re.compile(
    r"^(and |so |ok |but )?when\b"
    r"|\bwhen (is|are|am|was|were|do|does|did|will|can|could|should|would|must|has|have)\b"
    r"|\b(what year|which year|by when|since when|what date|deadline)\b"
)
# Any other "how much" asks an amount ("how much is the exam?"), time aside: "how much
# research time" is answered by a share as often as by a duration.
_ASKS_HOW_MUCH = re.compile(rf"{_HOW_MUCH}(?! (\w+ )?time\b)")
_ASKS_COUNT = re.compile(
    r"\bhow many\b|\bnumber of\b|\bhow big\b|\bhow large\b|\b(what|which|passing|pass) "
    r"(score|mark|grade|level)\b|\bscore (do|does) (i|you|one) need\b"
)
_LIST_NOUNS = re.compile(
    r"\b(steps|tips|ways|prerequisites|requirements|skills|tools|reasons|examples|types|kinds|"
    r"stages|strategies|techniques|practices|factors|benefits|challenges|responsibilities|"
    r"duties|options|platforms|languages|frameworks)\b"
)
_ASKS_LIST = re.compile(
    rf"^(what|which) (are|were)\b|{_LIST_NOUNS.pattern}|\b(things|list)\b"
    r"|^how (do|can|should|to|would)\b"
)
_ASKS_DEFINITION = re.compile(
    r"^(what|who) (is|are|was|were)( an?| the)?\b(?!.*\b(of|for|in|between|than)\b)"
    r"|\bmean(s|ing)?\b|\bdefin|"
    r"^what does .* (do|stand for)$"
)
_ASKS_COMPARISON = re.compile(
    r"\b(vs|versus|compared?|comparison|differ(ence|ent|s)?|better|worse|rather than|or)\b"
    r"|\b(more|less|higher|lower) than\b"
)
_ASKS_YESNO = re.compile(
    r"^(is|are|do|does|did|can|could|should|will|would|has|have|must|may|was|were)\b"
)

# A yes/no question can open with a clause of its own ("if i move to a cheaper city will
# they cut my pay?", "got a 4 on my review, am i still getting stock?"): its question is
# an auxiliary verb before its subject, in a question that opens with no question word.
_EMBEDDED_YESNO = re.compile(
    r"\b(is|are|am|was|were|do|does|did|can|could|will|would|should|must|has|have)\s+"
    r"(i|you|we|they|he|she|it|my|your|our|their|the|that|this|these|those|there|someone|"
    r"anyone|a|an)\b"
)
_QUESTION_WORD_FIRST = re.compile(
    r"^(and |so |but |ok |also )?(what|which|who|whom|whose|when|where|why|how)\b"
)

# A yes/no question asks for a figure only in so many words ("... and by how much?").
_ASKS_FIGURE = re.compile(
    r"\bhow (much|long|many|often|soon|big|large)\b|\bwhat (percent|percentage|share|proportion)\b"
    r"|\bwhen (is|are|do|does|will|can|should)\b|%"
)

# "How many paid holidays ..." counts holidays, whatever they are paid.
_ASKS_HOW_MANY = re.compile(r"\bhow many\b(?! (dollars|euros|pounds|rupees)\b)")

# In order: the first kind whose pattern a question matches is what it asks for.
_ASKS = (
    ("share", _ASKS_SHARE),
    ("duration", _ASKS_DURATION),
    ("count", _ASKS_HOW_MANY),
    ("amount", _ASKS_AMOUNT),
    ("date", _ASKS_DATE),
    ("count", _ASKS_COUNT),
    ("amount", _ASKS_HOW_MUCH),
    ("definition", _ASKS_DEFINITION),
    ("list", _ASKS_LIST),
    ("yesno", _ASKS_YESNO),
    ("comparison", _ASKS_COMPARISON),
)


def wanted_kind(lowered: str) -> str:
    """The kind of answer a lower-cased question asks for, one of `KINDS`.

    >>> wanted_kind("how long is the aws exam?")
    'duration'
    >>> wanted_kind("what is mlops?")
    'definition'
    >>> wanted_kind("which cloud certification is cheapest")
    'amount'
    >>> wanted_kind("how many paid holidays do ai architects get?")
    'count'
    >>> wanted_kind("is the signing bonus negotiable?")
    'yesno'
    >>> wanted_kind("what happens if i dont hand back my laptop when i leave")
    'other'
    >>> wanted_kind("if i move to a cheaper city will they cut my pay??")
    'yesno'
    """
    text = lowered.strip().rstrip("?!. ")
    yes_no = _ASKS_YESNO.search(text) or (
        _EMBEDDED_YESNO.search(text) and not _QUESTION_WORD_FIRST.search(text)
    )
    if yes_no and not _ASKS_FIGURE.search(text):
        return "yesno"  # "is the signing bonus negotiable?" asks no amount
    for kind, asks in _ASKS:
        if asks.search(text) and not (kind == "definition" and _LIST_NOUNS.search(text)):
            return kind  # "what are the steps ..." asks for a list, not a definition
    return "other"


# The same lines of the same articles are candidates again and again: remember verdicts.
@lru_cache(maxsize=1 << 16)
def states(kind: str, text: str) -> bool:
    """Whether ``text`` states a figure of ``kind`` (a kind of `FIGURE_KINDS`).

    >>> [states("amount", t) for t in ("12 LPA", "CHF 150,000", "it is free", "AI-102")]
    [True, True, True, False]
    >>> [states("duration", t) for t in ("a decade", "2h", "4 to 6 years", "20% of hours")]
    [True, True, True, False]
    >>> states("duration", "ten (10) years from the date of grant")
    True
    >>> states("share", "one-fifth of them")
    True
    >>> [states("count", t) for t in ("60 questions", "three rounds", "$120,000", "35%")]
    [True, True, False, False]
    >>> [states("date", t) for t in ("in 2025", "within 30 days of the grant", "on the 15th")]
    [True, True, True]
    >>> [states("date", t) for t in ("before you leave, talk to them", "the 75th percentile")]
    [False, False]
    """
    finds = _STATES.get(kind)
    return bool(finds and finds(text))


@lru_cache(maxsize=1 << 16)
def states_any(text: str) -> bool:
    """Whether ``text`` states an amount, a share or a duration ("Europe: $95,000 annually")."""
    return any(states(kind, text) for kind in ("amount", "share", "duration"))
