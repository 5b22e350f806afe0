"""How an answer's quotes are laid out on the page: rows of one table as one small table,
list items as a list under their introduction, sentences as paragraphs (under their
section title when they lean on what comes before them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rag.answering import Answer, Citation, Quote


@dataclass
class Block:
    """One block of an answer on the page.

    ``kind`` is ``table`` (``headers`` and ``rows`` of ``(values, citation)``),
    ``list`` (``intro`` and ``items`` of ``(text, citation)``) or ``sentence``
    (``items`` holds the one sentence; ``title`` is set when it needs its section).
    """

    kind: str
    citation: Citation
    title: str = ""
    intro: str = ""
    headers: tuple[str, ...] = ()
    rows: list[tuple[tuple[str, ...], Citation]] = field(default_factory=list)
    items: list[tuple[str, Citation]] = field(default_factory=list)

    @property
    def citations(self) -> list[Citation]:
        """The citations of a table's rows, each once, in order."""
        return list({c.n: c for _, c in self.rows}.values())


def blocks(answer: Answer) -> list[Block]:
    """The answer's quotes grouped into blocks, in the answer's order.

    >>> c = Citation(1, "p", "A", "Pay", "u", "x", 1.0, ())
    >>> row = lambda country, pay: Quote(
    ...     1, "table_row", f"Country: {country}; Pay: {pay}", (0, 1), "Pay",
    ...     cells=(("Country", country), ("Pay", pay)))
    >>> item = Quote(1, "list_item", "Python", (0, 1), "Skills", intro="Learn:")
    >>> answer = Answer("q", True, "", (c,), 1.0, quotes=(row("US", "$1"), row("UK", "$2"), item))
    >>> [(b.kind, b.headers, [r for r, _ in b.rows], b.intro) for b in blocks(answer)]
    [('table', ('Country', 'Pay'), [('US', '$1'), ('UK', '$2')], ''), ('list', (), [], 'Learn:')]
    """
    by_number = {c.n: c for c in answer.citations}
    laid_out: list[Block] = []
    for quote in answer.quotes:
        citation = by_number[quote.citation]
        last = laid_out[-1] if laid_out else None
        if quote.kind == "table_row":
            headers = tuple(h for h, _ in quote.cells)
            values = tuple(v for _, v in quote.cells)
            if last and last.kind == "table" and last.headers == headers:
                last.rows.append((values, citation))
            else:
                laid_out.append(
                    Block("table", citation, headers=headers, rows=[(values, citation)])
                )
        elif quote.kind == "list_item":
            if last and last.kind == "list" and last.intro == quote.intro:
                last.items.append((quote.text, citation))
            else:
                laid_out.append(
                    Block("list", citation, intro=quote.intro, items=[(quote.text, citation)])
                )
        else:
            title = quote.section if quote.needs_section else ""
            laid_out.append(
                Block("sentence", citation, title=title, items=[(quote.text, citation)])
            )
    return laid_out


__all__ = ["Block", "Quote", "blocks"]
