"""Question analysis: a question and its conversation read once into one frozen `Question`.

Every later stage (retrieval, scoring, citation) reads the fields of the
`Question`; none parses the question string again.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rag.figures import FIGURE_KINDS, wanted_kind
from rag.index import Index
from rag.tokens import STOPWORDS, correct_spelling, expand, normalise, synonyms, tokenize

MAX_QUESTION_CHARS = 1000

# Grammar, not tuning: a follow-up opens with a connective ("and in Europe?", "what about
# architects?"), is a bare fragment ("in Europe?", "why?"), or points back at something
# it does not name ("how long is it valid?", "do they need a degree?").
_CONNECTIVE = re.compile(
    r"^(and|or|but|also|then|so|what about|how about|what of|same for|same with|"
    r"and what about|ok and|okay and)\b"
)
# A follow-up with a question word of its own ("why?", "and how do I apply?") asks its own
# kind of question; "what about ...?" and "how about ...?" ask the earlier one again.
_OWN_QUESTION = re.compile(
    r"^(?:and |but |so )?(why|how(?! about)|what(?! about| of)|which|who|where)\b"
)
_FRAGMENT = re.compile(r"^(in|for|at|on|with|without|from|to|by|as|versus|vs)\b")
_ANAPHOR = re.compile(
    r"\b(it|its|this|these|those|they|them|that one|that way|those ones|ones|he|she)\b"
    # "... block that?", "worked there" (not "is there ...", "there are ...")
    r"|\bthat$|(?<!\bis )(?<!\bare )(?<!\bwas )(?<!\bwere )\bthere\b(?! (?:is|are|was|were|be)\b)"
)
# "it" standing for nothing before it: "how long does it take to ...", "is it worth ...".
_DUMMY_IT = re.compile(
    r"\b(worth|make|makes|made) it\b|\bit (take|takes|took|worth|possible|hard|easy|"
    r"necessary|common|true|better|required|normal|realistic|ok|okay|a good idea|likely)\b"
)
_ROLE_NOUN = (
    r"engineers?|architects?|scientists?|managers?|developers?|specialists?|analysts?|"
    r"researchers?|consultants?|designers?|leads?|officers?|directors?|interns?|"
    r"supervisors?|recruiters?|candidates?|employees?"
)
_ROLE = re.compile(rf"\b([a-z][\w+#-]*)\s+({_ROLE_NOUN})\b", re.IGNORECASE)
_ROLE_ONLY = re.compile(rf"\b({_ROLE_NOUN})\b")
# What a question asks about: the words after its question word, up to the first function
# word ("what is the passing score for ..." -> passing score, "how many questions ...",
# "which countries ...", "what commission rate do ..."). Grammar: it computes a feature
# (is the thing asked for in the quote?) and decides nothing on its own.
_FOCUS = re.compile(
    r"^(?:(?:and|so|ok|okay|but|then)\s+)?(?:what|which|how many|how much)(?:'s|s)?"
    r"(?:\s+(?:is|are|was|were))?(?:\s+(?:the|a|an|your|their|my|its|our))?\s+(?P<rest>.+)$"
)
_FOCUS_WORDS = 4
_FOCUS_ENDS = frozenset(
    ["among", "across", "per", "within", "without", "versus", "vs", "like", "near", "around"]
)
# A bracketed letter belongs to its name: "83(b)", "401(k)", "Schedule A(u)".
_NAME = re.compile(r"[A-Za-z][\w'-]*(?:\([A-Za-z]\))?|\d[\d,.]*[A-Za-z]*(?:\([A-Za-z]\))?")
# A name held by more than this share of passages ("AI") tells nothing apart.
COMMON_NAME_SHARE = 0.1


@dataclass(frozen=True)
class Question:
    """A question as the pipeline reads it.

    ``text`` is the question as asked, spelling-corrected against the articles'
    words; ``search_text`` is what retrieval searches: the question itself, or
    for a follow-up the earlier question it continues with what the follow-up
    replaces taken out, then the follow-up.
    """

    asked: str
    text: str
    tokens: tuple[str, ...]  # stems of the question's own words
    wants: str  # one of rag.figures.KINDS
    names: tuple[str, ...]  # names as written ("AWS", "Toronto")
    unknown_names: tuple[str, ...]  # names no article mentions
    distinctive: tuple[frozenset[str], ...]  # token sets of names few passages hold
    roles: frozenset[str]  # what tells the roles asked about apart ("prompt", "network")
    unknown_share: float  # share of the question's IDF weight on words no article uses
    follow_up: bool
    inherited: str  # the earlier question a follow-up continues ("" for none)
    replaced: tuple[str, ...]  # what of the inherited question the follow-up replaces
    search_text: str
    search_tokens: tuple[str, ...]  # stems searched (emphasis repeated)
    synonyms: tuple[str, ...]  # extra stems BM25 searches
    emphasis: tuple[str, ...]  # a follow-up's own stems, which the answer must address
    # The earlier questions and this one as one text ("" with no history): retrieval also
    # searches it, so a follow-up the grammar above does not recognise keeps its thread.
    conversation: str = ""
    conversation_tokens: tuple[str, ...] = ()
    # Stems of what the question asks about ("passing score"; see `focus`), or a
    # follow-up's inherited question's when it names none of its own.
    focus: tuple[str, ...] = ()
    # The question without the words no article uses ("" when it has none), and how far
    # its meaning moves without them (1 - cosine of the two embeddings; set once the
    # question is embedded): an unknown word carrying the question ("pastry chef")
    # moves it far, casual filler ("lol") barely.
    known_text: str = ""
    unknown_meaning: float = 0.0

    @property
    def wants_figure(self) -> bool:
        return self.wants in FIGURE_KINDS

    def to_dict(self) -> dict:
        return {
            "asked": self.asked,
            "text": self.text,
            "tokens": list(self.tokens),
            "wants": self.wants,
            "names": list(self.names),
            "unknown_names": list(self.unknown_names),
            "roles": sorted(self.roles),
            "unknown_share": round(self.unknown_share, 3),
            "follow_up": self.follow_up,
            "inherited": self.inherited,
            "replaced": list(self.replaced),
            "search_text": self.search_text,
            "emphasis": list(self.emphasis),
            "conversation": self.conversation,
            "focus": list(self.focus),
            "unknown_meaning": round(self.unknown_meaning, 3),
        }


def clean(question: str) -> str:
    """The question with its whitespace collapsed; raises `InputError` when unusable."""
    from rag.errors import InputError

    question = " ".join(str(question).split())
    if not question:
        raise InputError("the question is empty; type a question about careers")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(
            f"the question is {len(question)} characters long; "
            f"keep it to {MAX_QUESTION_CHARS} characters"
        )
    return question


def analyse(question: str, history: tuple[str, ...] | list[str], index: Index) -> Question:
    """Read a question and the conversation's earlier questions (oldest first).

    >>> is_follow_up("and in Europe?", has_history=True)
    True
    >>> is_follow_up("What is MLOps?", has_history=True)
    False
    """
    asked = clean(question)
    text = correct_spelling(asked, index.words, index.word_choices)
    previous = [" ".join(str(h).split()) for h in history]
    previous = [correct_spelling(h, index.words, index.word_choices) for h in previous if h]
    inherited = _frame(previous)
    follow_up = bool(inherited) and is_follow_up(text, has_history=True)
    own = tuple(tokenize(text))
    replaced: tuple[str, ...] = ()
    if follow_up:
        frame, replaced = _replace(inherited, text, index)
        search_text = f"{frame} {text}"
        emphasis = own
    else:
        inherited, search_text, emphasis = "", text, ()
    search_tokens = (*tokenize(search_text), *emphasis)
    conversation = " ".join([*previous, text]) if previous else ""
    written = _names(text, index.proper_words)
    lowered = normalise(text)
    wants = wanted_kind(lowered)
    # "and in Europe?" asks what the question before it did; "why?" asks something else.
    if follow_up and wants == "other" and not _OWN_QUESTION.match(lowered):
        wants = wanted_kind(normalise(inherited))
    asked_about = focus(text) or (focus(inherited) if follow_up else ())
    return Question(
        asked=asked,
        text=text,
        tokens=own,
        wants=wants,
        names=tuple(word for word, _ in written),
        unknown_names=tuple(
            word for word, tokens in written if all(t not in index.idf for t in tokens)
        ),
        distinctive=_distinctive(index, written),
        roles=role_kinds(index, search_text if follow_up and not _mentions_role(text) else text),
        unknown_share=unknown_share(index, own or search_tokens),
        follow_up=follow_up,
        inherited=inherited,
        replaced=replaced,
        search_text=search_text,
        search_tokens=search_tokens,
        synonyms=tuple(expand(search_tokens)),
        emphasis=emphasis,
        conversation=conversation,
        conversation_tokens=tuple(tokenize(conversation)),
        focus=asked_about,
        known_text=_known_text(index, text),
    )


def _known_text(index: Index, text: str) -> str:
    """The question without the words no article uses; "" when it has none (or only such)."""
    words = text.split()
    kept = [w for w in words if not _unknown_word(index, w)]
    return " ".join(kept) if kept and len(kept) < len(words) else ""


def _unknown_word(index: Index, word: str) -> bool:
    tokens = tokenize(word)
    return bool(tokens) and all(_never_used(index, t) for t in tokens)


def _never_used(index: Index, token: str) -> bool:
    """Whether no article uses the token, even as a synonym."""
    return all(s not in index.idf for s in synonyms(token))


def focus(text: str) -> tuple[str, ...]:
    """Stems of what a question asks about: the content words right after its question word.

    >>> focus("What is the passing score for the AWS exam?")
    ('pass', 'score')
    >>> focus("how many questions are on the AI-102 exam?")
    ('question',)
    >>> focus("How much does the course cost?")
    ()
    """
    match = _FOCUS.match(normalise(text).strip())
    if not match:
        return ()
    words = []
    for word in match.group("rest").split():
        word = word.strip("?!.,;:\"'()")
        if not word or word in STOPWORDS or word in _FOCUS_ENDS or not word[0].isalpha():
            break
        words.append(word)
        if len(words) == _FOCUS_WORDS:
            break
    return tuple(tokenize(" ".join(words)))


def is_follow_up(text: str, *, has_history: bool) -> bool:
    """Whether a question only makes sense with the one before it (see `_CONNECTIVE`)."""
    if not has_history:
        return False
    lowered = normalise(text).strip(" ?!.")
    if not tokenize(lowered):  # "why?", "how so?"
        return True
    pointing = _ANAPHOR.search(_DUMMY_IT.sub(" ", lowered))
    return bool(_CONNECTIVE.match(lowered) or _FRAGMENT.match(lowered) or pointing)


def _frame(previous: list[str]) -> str:
    """The question a follow-up continues: the last complete one, with its own follow-ups."""
    frame = ""
    for i, earlier in enumerate(previous):
        continues = i and is_follow_up(earlier, has_history=True)
        frame = f"{frame} {earlier}" if continues else earlier
    return frame


def _replace(inherited: str, text: str, index: Index) -> tuple[str, tuple[str, ...]]:
    """The inherited question without what the follow-up replaces: its names when the
    follow-up names others ("and in Europe?" after "... in the US?"), its role when the
    follow-up asks about another ("what about architects?")."""
    replaced: list[str] = []
    frame = inherited
    if _names(text, index.proper_words):
        own = {t for _, tokens in _names(text, index.proper_words) for t in tokens}
        for word, tokens in _names(inherited, index.proper_words):
            if not own.intersection(tokens):
                frame = re.sub(rf"\b{re.escape(word)}\b", " ", frame)
                replaced.append(word)
    if _mentions_role(text):
        for match in list(_ROLE.finditer(frame)):
            phrase = match.group(0)
            if phrase.lower() not in text.lower():
                replaced.append(phrase)
                frame = frame.replace(phrase, " ")
    return " ".join(frame.split()), tuple(dict.fromkeys(replaced))


def _mentions_role(text: str) -> bool:
    return bool(_ROLE_ONLY.search(normalise(text)))


def _names(question: str, proper: frozenset[str]) -> list[tuple[str, list[str]]]:
    """Names in a question — capitalised words past the first, acronyms, figures, and words
    the articles only ever write as names (``proper``: "europe", "google") — with tokens."""
    found = []
    for match in _NAME.finditer(question):
        word = match.group()
        before = question[: match.start()].rstrip(" \"'(")
        opening = not before or before.endswith((".", "?", "!", ":"))  # a sentence's first word
        named = (word[0].isupper() and not opening) or word.isupper() or word[0].isdigit()
        named = named or word.lower() in proper
        if named and normalise(word) not in STOPWORDS and (tokens := tokenize(word)):
            found.append((word, tokens))
    return found


def _distinctive(index: Index, written: list[tuple[str, list[str]]]) -> tuple[frozenset[str], ...]:
    common = math.log(1 + 1 / COMMON_NAME_SHARE)  # IDF of a token in that share of passages
    return tuple(
        frozenset(tokens)
        for _, tokens in written
        if all(t in index.idf for t in tokens) and min(index.idf[t] for t in tokens) > common
    )


_PAIRS: dict[int, frozenset[tuple[str, str]]] = {}


def role_kinds(index: Index, text: str) -> frozenset[str]:
    """The words that tell the roles a question asks about apart ("prompt", "network").

    The word before a role noun counts when the articles use the two together and the
    word is not in most passages ("AI", "ML").
    """
    common = math.log(1 + 1 / COMMON_NAME_SHARE)
    found = set()
    for match in _ROLE.finditer(normalise(text)):
        head, kind = tokenize(match.group(2)), tokenize(match.group(1))
        if (
            head
            and kind
            and index.idf.get(kind[-1], 0) > common
            and _cooccur(index, kind[-1], head[0])
        ):
            found.add(kind[-1])
    return frozenset(found)


def _cooccur(index: Index, word: str, head: str) -> bool:
    """Whether some sentence holds both tokens (looked up, not scanned, after the first)."""
    key = id(index.sentence_tokens)
    if key not in _PAIRS:
        _PAIRS.clear()  # one index at a time is served; a rebuilt one replaces it
        heads = {tokenize(h)[0] for h in _ROLE_NOUN.replace("?", "").split("|")}
        pairs = set()
        for tokens in index.sentence_tokens:
            for h in heads & tokens:
                pairs.update((t, h) for t in tokens)
        _PAIRS[key] = frozenset(pairs)
    return (word, head) in _PAIRS[key]


def unknown_share(index: Index, tokens: tuple[str, ...] | list[str]) -> float:
    """The share of the tokens' IDF weight on tokens the articles never use, even as a
    synonym (a token no passage holds weighs as much as the rarest)."""
    rare = math.log(1 + len(index.passages))
    weights = {t: index.idf.get(t, rare) for t in tokens}
    unknown = sum(w for t, w in weights.items() if _never_used(index, t))
    return unknown / (sum(weights.values()) or 1.0)
