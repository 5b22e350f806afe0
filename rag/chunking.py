"""Chunking: cut each section into passages of whole sentences that fit the embedding model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

import pysbd

from rag.ingest import TEXT, Article, Section, Shape
from rag.settings import Settings


@dataclass(frozen=True)
class Passage:
    """A run of whole units from one section, the passage that is indexed and cited.

    A unit is a sentence, a whole table row or a whole list item. ``sentences``
    holds the ``[start, end)`` character offsets of each unit in ``text``, and
    ``shapes`` what each is (a row's cells, a list item's introduction); the
    answer step quotes exactly those slices.
    """

    id: str
    article_title: str
    article_url: str
    article_slug: str
    published: str | None
    section_path: str
    anchor: str
    text: str
    sentences: tuple[tuple[int, int], ...]
    shapes: tuple[Shape, ...] = ()

    def shape(self, unit: int) -> Shape:
        return self.shapes[unit] if unit < len(self.shapes) else TEXT

    @property
    def url(self) -> str:
        """The article URL pointing at this passage's section."""
        return f"{self.article_url}#{self.anchor}" if self.anchor else self.article_url

    @property
    def indexed_text(self) -> str:
        """What is embedded and searched: the heading path gives short passages context."""
        return f"{self.article_title}. {self.section_path}.\n{self.text}"

    def sentence_texts(self) -> list[str]:
        return [self.text[start:end] for start, end in self.sentences]

    def context_texts(self) -> list[str]:
        """Each unit under its article's title and section path: what it is about, for the
        unit's second embedding (a list item or a bare "It takes 4 years." alone says little)."""
        return [f"{self.article_title}. {self.section_path}: {t}" for t in self.sentence_texts()]


@cache
def _segmenter() -> pysbd.Segmenter:
    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def split_sentences(line: str) -> list[str]:
    """The sentences of one line of text, stripped, in order.

    >>> split_sentences("Pay rose 5% in the U.S. last year. It may slow.")
    ['Pay rose 5% in the U.S. last year.', 'It may slow.']
    """
    found = [span.sent.strip() for span in _segmenter().segment(line)]
    return [sentence for sentence in found if sentence] or [line.strip()]


def chunk_articles(articles: list[Article], settings: Settings) -> list[Passage]:
    """Every passage of every article, in reading order."""
    passages: list[Passage] = []
    for article in articles:
        for section in article.sections:
            passages.extend(chunk_section(article, section, settings))
    return passages


def chunk_section(article: Article, section: Section, settings: Settings) -> list[Passage]:
    """Greedily pack a section's sentences into passages of about ``chunk_words`` words.

    A passage never crosses the section; when a long section is split, the
    next passage repeats the last ``chunk_overlap_sentences`` sentences so an
    answer that straddles the cut is still found whole in one passage.
    """
    # (line number, unit) keeps line breaks: list items and table rows stay one per line,
    # whole; running text is cut into its sentences.
    units = [
        (n, unit)
        for n, line in enumerate(section.lines)
        for unit in (
            [line.strip()] if section.shape(n).kind != "sentence" else split_sentences(line)
        )
    ]
    overlap = settings.chunk_overlap_sentences
    groups: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    carried = 0  # leading sentences of `current` repeated from the previous passage
    words = 0
    for unit in units:
        size = len(unit[1].split())
        # Close the passage before this sentence when it would grow past the target,
        # unless that leaves a short fragment and the hard limit still allows it.
        if (
            len(current) > carried
            and words + size > settings.chunk_words
            and (words >= settings.chunk_words * 0.6 or words + size > settings.chunk_max_words)
        ):
            groups.append(current)
            tail = current[-overlap:] if overlap else []
            current = [u for u in tail if len(u[1].split()) <= settings.chunk_words // 3]
            carried = len(current)
            words = sum(len(u[1].split()) for u in current)
        current.append(unit)
        words += size
    if len(current) > carried:
        groups.append(current)
    return [_passage(article, section, group) for group in groups]


def _passage(article: Article, section: Section, group: list[tuple[int, str]]) -> Passage:
    text = ""
    spans: list[tuple[int, int]] = []
    previous_line = None
    for line_no, sentence in group:
        if text:
            text += "\n" if line_no != previous_line else " "
        spans.append((len(text), len(text) + len(sentence)))
        text += sentence
        previous_line = line_no
    shapes = tuple(section.shape(line_no) for line_no, _ in group)
    key = "\x1f".join((article.url, section.anchor, section.path_text, text))
    return Passage(
        id=hashlib.sha256(key.encode()).hexdigest()[:16],
        article_title=article.title,
        article_url=article.url,
        article_slug=article.slug,
        published=article.published,
        section_path=section.path_text,
        anchor=section.anchor,
        text=text,
        sentences=tuple(spans),
        shapes=shapes,
    )
