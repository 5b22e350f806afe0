"""Ingest: read feeds, HTML pages and Markdown files into articles made of sections."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from html.entities import html5
from pathlib import Path
from urllib.parse import urlsplit

import lxml.etree as etree
import lxml.html
from markdown_it import MarkdownIt

from rag.errors import CorpusError

log = logging.getLogger(__name__)

FEED_SUFFIXES = (".xml", ".rss", ".atom")
CORPUS_SUFFIXES = (*FEED_SUFFIXES, ".html", ".htm", ".md", ".markdown")
PATH_SEPARATOR = " › "

_NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "content": "http://purl.org/rss/1.0/modules/content/",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4}
_FOOTER = re.compile(r"^The post .+ appeared first on .+$", re.S)
_BOX_DRAWING = re.compile(r"[\u2500-\u259f]+")
_SPACE = re.compile(r"\s+")
_ASCII_RULE = re.compile(r"^[\s+\-=|:]*$")
# Terminal escape sequences (CSI, OSC, other two-character escapes), then any C0 or C1
# control character left: titles and text are printed by `rag list` and `rag ask`.
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[@-Z\\-_]"
)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
_LINK_SCHEMES = ("http", "https")
# Elements whose text runs on with the text around them; any other element is a block.
_INLINE = frozenset(
    {"a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "del", "dfn", "em", "font", "i"}
    | {"ins", "kbd", "label", "mark", "q", "s", "samp", "small", "span", "strong", "sub"}
    | {"sup", "time", "u", "var", "wbr"}
)
_SKIPPED = ("img", "script", "style", "noscript", "iframe", "svg", "form")
_INTRO_WORDS = 15  # a line before a list this short is its title (a display choice)


@dataclass(frozen=True)
class Shape:
    """What a line is: running text, a table row with its ``(header, value)`` cells, or a
    list item with the line that introduces its list."""

    kind: str = "sentence"  # "sentence" | "table_row" | "list_item"
    cells: tuple[tuple[str, str], ...] = ()
    intro: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> Shape:
        cells = tuple((str(h), str(v)) for h, v in data.get("cells", ()))
        return cls(str(data.get("kind", "sentence")), cells, str(data.get("intro", "")))


TEXT = Shape()


@dataclass(frozen=True)
class Section:
    """The text under one heading: its heading path, anchor and lines.

    ``shapes`` says, line by line, which lines are table rows or list items;
    a line without one is running text.
    """

    heading: str
    path: tuple[str, ...]
    anchor: str
    lines: tuple[str, ...]
    shapes: tuple[Shape, ...] = ()

    @property
    def path_text(self) -> str:
        return PATH_SEPARATOR.join(self.path)

    def shape(self, line: int) -> Shape:
        return self.shapes[line] if line < len(self.shapes) else TEXT


@dataclass(frozen=True)
class Article:
    """One article of the corpus with where it came from."""

    title: str
    url: str
    published: str | None  # ISO 8601 date-time, when the source gives one
    source: str  # corpus file name
    sections: tuple[Section, ...]

    @property
    def slug(self) -> str:
        return article_slug(self.url)


@dataclass(frozen=True)
class CorpusFile:
    """A corpus file's name and content hash, recorded in the index manifest."""

    name: str
    sha256: str

    @classmethod
    def of(cls, path: Path, raw: bytes) -> CorpusFile:
        return cls(path.name, hashlib.sha256(raw).hexdigest())


def article_slug(url: str) -> str:
    """The last path segment of an article URL: ``https://x.com/a-b/`` -> ``a-b``."""
    tail = url.split("#", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail.rsplit(".", 1)[0] if tail.endswith((".html", ".htm", ".md")) else tail


def slugify(text: str) -> str:
    """A URL fragment for a heading: ``"B. The Impact" -> "b-the-impact"``."""
    return re.sub(r"[^\w]+", "-", text.lower()).strip("-") or "section"


def corpus_files(corpus_dir: Path) -> list[Path]:
    """The article files of a corpus folder, sorted; raises when there are none."""
    if not corpus_dir.exists():
        raise CorpusError(f"corpus folder {corpus_dir} does not exist; create it and add articles")
    if not corpus_dir.is_dir():
        raise CorpusError(f"corpus folder {corpus_dir} is not a folder")
    try:
        paths = sorted(p for p in corpus_dir.iterdir() if p.suffix.lower() in CORPUS_SUFFIXES)
    except PermissionError:
        raise CorpusError(f"cannot read corpus folder {corpus_dir}: permission denied") from None
    if not paths:
        raise CorpusError(
            f"no articles in {corpus_dir}: add .xml/.rss feeds, .html pages or .md files"
        )
    for path in paths:
        check_not_linked(path)
    return paths


def check_not_linked(path: Path) -> None:
    """Refuse a symbolic link: the index is public, and a link would publish what it points to.

    ``ln -s /etc/passwd corpus/leak.md`` is refused. The corpus folder itself
    may be a link; the files in it, which are then inside its real path, may not.
    """
    if path.is_symlink():
        raise CorpusError(f"{path}: is a symbolic link; copy the file itself into the corpus")


def load_corpus(corpus_dir: Path) -> tuple[list[Article], list[CorpusFile]]:
    """Every article of every file in the corpus folder.

    One bad file stops the whole load with a message naming it: an index
    silently missing an article would answer worse without anyone knowing.
    """
    articles: list[Article] = []
    files: list[CorpusFile] = []
    for path in corpus_files(corpus_dir):
        raw = _read_bytes(path)
        files.append(CorpusFile.of(path, raw))
        articles.extend(read_articles(path, raw))
    return articles, files


def read_articles(path: Path, raw: bytes | None = None) -> list[Article]:
    """The articles of one corpus file, whatever its kind."""
    raw = _read_bytes(path) if raw is None else raw
    suffix = path.suffix.lower()
    if suffix in FEED_SUFFIXES:
        return _read_feed(path, raw)
    text = _decode(path, raw)
    if suffix in (".md", ".markdown"):
        return [_read_markdown(path, text)]
    return [_read_html_page(path, text)]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot be read ({exc.strerror})") from None


def _decode(path: Path, raw: bytes) -> str:
    if b"\x00" in raw:
        raise CorpusError(f"{path}: is a binary file, not {path.suffix} text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CorpusError(f"{path}: is not UTF-8 text; save it as UTF-8") from None


def _read_feed(path: Path, raw: bytes) -> list[Article]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        raise CorpusError(f"{path}: malformed feed: {exc.msg} (line {exc.lineno})") from None
    tag = etree.QName(root).localname
    if tag == "rss":
        items = [_rss_item(path, item) for item in root.iterfind("channel/item")]
    elif tag == "feed":
        items = [_atom_entry(path, entry) for entry in root.iterfind("atom:entry", _NS)]
    else:
        raise CorpusError(f"{path}: is not an RSS 2.0 or Atom feed (root element <{tag}>)")
    if not items:
        raise CorpusError(f"{path}: the feed has no items")
    return items


def _rss_item(path: Path, item: etree._Element) -> Article:
    text = _FeedText(path, item)
    title = text("title")
    html = text("content:encoded", html=True) or text("description", html=True)
    published = None
    if date := text("pubDate").strip():
        try:
            published = parsedate_to_datetime(date).isoformat()
        except (TypeError, ValueError):
            raise CorpusError(
                f"{path}: item {_clean(title)!r} has an unreadable pubDate {date!r}"
            ) from None
    return _article(path, title, text("link"), published, html)


def _atom_entry(path: Path, entry: etree._Element) -> Article:
    text = _FeedText(path, entry)
    title = text("atom:title")
    link = entry.find("atom:link[@rel='alternate']", _NS)
    if link is None:
        link = entry.find("atom:link", _NS)
    url = link.get("href", "") if link is not None else ""
    content = entry.find("atom:content", _NS)
    if content is None:
        content = entry.find("atom:summary", _NS)
    html = ""
    if content is not None:
        if content.get("type") == "xhtml":
            html = "".join(etree.tostring(child, encoding="unicode") for child in content)
        else:
            html = text(content, html=True)
    date = text("atom:published") or text("atom:updated")
    published = None
    if date:
        try:
            published = datetime.fromisoformat(date.strip().replace("Z", "+00:00")).isoformat()
        except ValueError:
            raise CorpusError(
                f"{path}: entry {_clean(title)!r} has an unreadable date {date!r}"
            ) from None
    return _article(path, title, url, published, html)


class _FeedText:
    """The whole text of an item's child elements, entities the parser left unresolved included.

    Feeds are parsed without resolving entities (no network, no entity
    expansion), so an entity declared in an external DTD (``&nbsp;``) stays a
    node, and ``findtext`` would stop at it and drop the rest. A name HTML
    knows is kept (decoded in plain text, left for the HTML parser in markup);
    any other one is left out with a warning.
    """

    def __init__(self, path: Path, item: etree._Element) -> None:
        self.path = path
        self.item = item

    def __call__(self, child: str | etree._Element, *, html: bool = False) -> str:
        element = self.item.find(child, _NS) if isinstance(child, str) else child
        return "" if element is None else self._text(element, element, html)

    def _text(self, node: etree._Element, element: etree._Element, html: bool) -> str:
        parts = [node.text or ""]
        for child in node:
            if child.tag is etree.Entity:
                parts.append(self._entity(child.text, element, html=html))
            elif isinstance(child.tag, str):
                parts.append(self._text(child, element, html))
            parts.append(child.tail or "")  # a comment's tail too
        return "".join(parts)

    def _entity(self, reference: str, element: etree._Element, *, html: bool) -> str:
        name = reference[1:]  # "&nbsp;" -> "nbsp;", the key of html5
        if name in html5:
            return reference if html else html5[name]
        log.warning(
            "%s: <%s> uses the entity %s, which is not defined; it was left out",
            self.path,
            etree.QName(element).localname,
            reference,
        )
        return ""


def _read_html_page(path: Path, text: str) -> Article:
    if not text.strip():
        raise CorpusError(f"{path}: is empty")
    doc = lxml.html.document_fromstring(text)
    canonical = doc.xpath("//link[@rel='canonical']/@href | //meta[@property='og:url']/@content")
    title = _clean(doc.findtext(".//title") or "") or _first_heading(doc) or path.stem
    dates = doc.xpath("//meta[@property='article:published_time']/@content | //time/@datetime")
    body = doc.find("body")
    html = lxml.html.tostring(body if body is not None else doc, encoding="unicode")
    url = canonical[0] if canonical else f"/corpus/{path.name}"
    return _article(path, title, url, _iso_date(path, title, dates[0]) if dates else None, html)


def _read_markdown(path: Path, text: str) -> Article:
    meta: dict[str, str] = {}
    if text.startswith("---\n") and "\n---" in text[4:]:
        header, text = text[4:].split("\n---", 1)
        for line in header.splitlines():
            key, _, value = line.partition(":")
            meta[key.strip().lower()] = value.strip().strip("\"'")
    html = MarkdownIt("commonmark").enable("table").render(text)
    title = meta.get("title") or _first_heading(lxml.html.fragment_fromstring(html, "div"))
    url = meta.get("url") or f"/corpus/{path.name}"
    title = title or path.stem
    published = _iso_date(path, title, date) if (date := meta.get("date")) else None
    return _article(path, title, url, published, html)


def _iso_date(path: Path, title: str, text: str) -> str:
    """A page's or a Markdown file's date as ISO 8601: a day, or a date-time.

    ISO 8601 (``2025-01-02``, ``2025-01-02T10:30:00Z``) and RFC 2822 (as in
    RSS) are read; anything else stops the file, because the API and the date
    filters read every article's day.
    """
    text = text.strip()
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text).isoformat()
    except (TypeError, ValueError, IndexError):
        raise CorpusError(
            f"{path}: article {_clean(title)!r} has an unreadable date {text!r}; "
            "write it as YYYY-MM-DD (or an ISO 8601 date-time)"
        ) from None


def _first_heading(doc: lxml.html.HtmlElement) -> str:
    found = doc.xpath("(//h1 | //h2)[1]")
    return _clean(found[0].text_content()) if found else ""


def _article(path: Path, title: str, url: str, published: str | None, html: str) -> Article:
    title = _clean(title)
    if not title:
        raise CorpusError(f"{path}: an article has no title")
    url = url.strip()
    if url and not is_web_link(url):
        raise CorpusError(
            f"{path}: article {title!r} links to {url!r}; "
            "only http(s) or relative links are accepted"
        )
    sections = _sections(title, html) if html.strip() else []
    if not sections:
        raise CorpusError(f"{path}: article {title!r} has no text")
    return Article(title, url or f"/corpus/{path.name}", published, path.name, tuple(sections))


def is_web_link(url: str) -> bool:
    """Whether a citation may link to ``url``: http(s), or relative to the chat's site.

    ``is_web_link("https://x.org/a")`` and ``is_web_link("/corpus/a.md")`` are
    true; ``is_web_link("javascript:alert(1)")`` and ``data:`` URLs are false.

    Any whitespace or control character is refused outright: browsers drop
    tabs and newlines inside a scheme, so ``java\tscript:`` runs as script.
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        return False
    try:
        scheme = urlsplit(url).scheme
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False
    return scheme in _LINK_SCHEMES or (not scheme and ":" not in url.split("/", 1)[0])


def _sections(title: str, html: str) -> list[Section]:
    """Split article HTML into sections at h1–h4 headings, keeping the heading path."""
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    builder = _SectionBuilder(title)
    builder.walk(root)
    return builder.finish()


class _SectionBuilder:
    def __init__(self, title: str) -> None:
        self.stack: list[tuple[int, str]] = []  # (level, heading) of open headings
        self.heading = title
        self.anchor = ""
        self.lines: list[str] = []
        self.shapes: dict[int, Shape] = {}  # line number -> shape, for rows and list items
        self.sections: list[Section] = []
        self.anchors: set[str] = set()
        self.next_suffix: dict[str, int] = {}  # per anchor base, the first suffix not yet tried

    def walk(self, element: lxml.html.HtmlElement) -> None:
        """Read an element's children; text between them is a line of its own.

        A container's own text and the text after each block inside it
        (``<div>Intro <p>Para.</p> Tail</div>``) are kept, with inline markup
        (``<b>``, ``<a>`` …) running on in the same line and ``<br>`` ending it.
        """
        loose = [element.text or ""]
        for child in element:
            tag = child.tag.lower() if isinstance(child.tag, str) else ""
            if tag == "br":
                self._add_loose(loose)
                loose = []
            elif tag in _INLINE and not _holds_blocks(child):
                loose.append(child.text_content())
            elif tag and tag not in _SKIPPED:  # not a comment, a script, an image …
                self._add_loose(loose)
                loose = []
                self._block(child, tag)
            loose.append(child.tail or "")
        self._add_loose(loose)

    def _block(self, child: lxml.html.HtmlElement, tag: str) -> None:
        if tag in _HEADINGS:
            # An article's own title is its h1, so an h1 in the body ranks as an h2:
            # otherwise one promotional h1 would become the parent of every section.
            level = max(_HEADINGS[tag], 2)
            self._open(level, _clean(child.text_content()), child.get("id"))
        elif tag == "p":
            self._paragraph(child)
        elif tag in ("ul", "ol"):
            self._list(child)
        elif tag == "table":
            self._rows(_table_rows(child))
        elif tag == "pre":
            self._rows(_pre_lines(child))
        elif tag == "figure" and not child.xpath(".//table"):
            if caption := _clean(" ".join(child.xpath(".//figcaption//text()"))):
                self.lines.append(caption)
        elif len(child):
            self.walk(child)
        else:
            self._add(child.text_content())

    def _add_loose(self, parts: list[str]) -> None:
        # A blank line parts paragraphs of plain text (an RSS description without markup).
        for paragraph in re.split(r"\n\s*\n", "".join(parts)):
            self._add(paragraph)

    def _open(self, level: int, heading: str, anchor: str | None) -> None:
        if not heading:
            return
        self._flush()
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, heading))
        self.heading = heading
        base = (anchor or "").strip() or slugify(heading)
        # Suffixes already tried for this base stay taken, so each search starts where the
        # last one ended: n identical headings cost n steps, not n² (same anchors as before).
        unique, n = base, self.next_suffix.get(base, 2)
        if unique in self.anchors:
            unique = f"{base}-{n}"
            while unique in self.anchors:
                n += 1
                unique = f"{base}-{n}"
            n += 1
        self.next_suffix[base] = n
        self.anchors.add(unique)
        self.anchor = unique

    def _flush(self) -> None:
        if self.lines:
            path = tuple(h for _, h in self.stack) or (self.heading,)
            shapes = tuple(self.shapes.get(n, TEXT) for n in range(len(self.lines)))
            self.sections.append(
                Section(self.heading, path, self.anchor, tuple(self.lines), shapes)
            )
        self.lines = []
        self.shapes = {}

    def _rows(self, lines: list[tuple[str, tuple[tuple[str, str], ...]]]) -> None:
        """Lines of a table: rows carry their cells; a caption or title carries none."""
        for text, cells in lines:
            if cells:
                self.shapes[len(self.lines)] = Shape("table_row", cells)
            self.lines.append(text)

    def finish(self) -> list[Section]:
        self._flush()
        return self.sections

    def _add(self, text: str) -> None:
        text = _clean(text)
        if text and not _FOOTER.match(text):
            self.lines.append(text)

    def _paragraph(self, p: lxml.html.HtmlElement) -> None:
        if p.find(".//br") is None:
            self._add(p.text_content())
            return
        lines = [line for line in (_clean(x) for x in _split_at_breaks(p)) if line]
        if rows := _flattened_table(lines):
            self._rows(rows)
        else:
            self.lines.extend(lines)

    def _list(self, element: lxml.html.HtmlElement, intro: str | None = None) -> None:
        """Each item a line, introduced by the text line before the list (or, in a nested
        list, by its parent item)."""
        if intro is None:
            last = len(self.lines) - 1
            before = self.lines[last] if last >= 0 and last not in self.shapes else ""
            # A line ending with a colon, or a short title-like line, introduces the list;
            # a paragraph of its own does not.
            introduces = before.endswith(":") or len(before.split()) <= _INTRO_WORDS
            intro = before if introduces else ""
        for item in element.iterchildren("li"):
            nested = [n for n in item if isinstance(n.tag, str) and n.tag in ("ul", "ol")]
            for n in nested:
                item.remove(n)
            before = len(self.lines)
            self._add(item.text_content())
            if len(self.lines) > before:
                self.shapes[before] = Shape("list_item", intro=intro)
            for n in nested:
                self._list(n, self.lines[before] if len(self.lines) > before else intro)


def _holds_blocks(element: lxml.html.HtmlElement) -> bool:
    """Whether an inline element wraps block elements (``<a><p>…</p></a>``) or breaks."""
    return any(
        isinstance(node.tag, str) and node.tag.lower() not in _INLINE
        for node in element.iterdescendants()
    )


def _split_at_breaks(element: lxml.html.HtmlElement) -> list[str]:
    """The text of an element cut at each ``<br>``."""
    parts = [element.text or ""]
    for node in element.iterdescendants():
        if node.tag == "br":
            parts.append("")
        elif node.text and isinstance(node.tag, str):
            parts[-1] += node.text
        if node.tail:
            parts[-1] += node.tail
    return parts


Row = tuple[str, tuple[tuple[str, str], ...]]  # a table's line and its (header, value) cells


def _flattened_table(lines: list[str]) -> list[Row] | None:
    """Rows of a table flattened into a paragraph with ``<br>``, each prefixed by the header.

    The header is recognisable as a short first line without sentence
    punctuation or figures, followed by at least two rows. Nothing marks where
    one cell ends and the next begins, so a row stays whole: one cell under the
    whole header line, rather than a guess at the columns.
    """
    if len(lines) < 3:
        return None
    header = lines[0]
    if len(header.split()) > 16 or re.search(r"[.!?;:]$|\d", header):
        return None
    return [(f"{header}: {row}", ((header, row),)) for row in lines[1:]]


def _table_rows(table: lxml.html.HtmlElement) -> list[Row]:
    """Each row as one line that repeats its header cells (``Country: US; Salary: $1``),
    with those cells."""
    rows = [
        [_clean(cell.text_content()) for cell in tr if cell.tag in ("td", "th")]
        for tr in table.iter("tr")
    ]
    rows = [row for row in rows if any(row)]
    lines: list[Row] = []
    if caption := _clean(" ".join(table.xpath("./caption//text()"))):
        lines.append((caption, ()))
    if not rows:
        return lines
    header, body = rows[0], rows[1:]
    if not body:
        return [*lines, ("; ".join(c for c in header if c), ())]
    lines.extend(_header_row(header, row) for row in body)
    return lines


def _pre_lines(pre: lxml.html.HtmlElement) -> list[Row]:
    """Preformatted text: ASCII tables become header-carrying rows, other lines stay lines."""
    if pre.text and pre.text.strip().endswith("CopyEdit"):
        pre.text = ""  # the "plaintext Copy Edit" buttons of a pasted chat transcript
    raw = [_BOX_DRAWING.sub(" ", line) for line in _split_at_breaks(pre)]
    raw = [line for part in raw for line in part.splitlines() if re.search(r"\w", line)]
    content = [line for line in raw if not _ASCII_RULE.match(line)]
    grid = [line for line in content if "|" in line]
    if len(grid) < 3 or len(grid) < len(content) - 2:
        return [(_clean(line), ()) for line in content]
    lines: list[Row] = [(_clean(line), ()) for line in content if "|" not in line]
    rows = [[_clean(c) for c in line.strip().strip("|").split("|")] for line in grid]
    # Single-cell rows above the header are the table's title.
    while rows and len([c for c in rows[0] if c]) < 2:
        lines.extend((c, ()) for c in rows.pop(0) if c)
    if rows and any(re.fullmatch(r"[\d\s.,%$()+-]+", c) for c in rows[0] if c):
        # A first row of figures is data, not a header (a bar chart drawn in text):
        # the lines stay as written rather than be given made-up column names.
        return [*lines, *((_clean(line), ()) for line in grid)]
    if rows:
        header, body = rows[0], rows[1:]
        lines.extend(_header_row(header, row) for row in body if any(row))
    return lines


def _header_row(header: list[str], row: list[str]) -> Row:
    """``Header: cell; Header: cell`` for the non-empty cells of a row, and those cells
    (a cell without a header keeps an empty one)."""
    cells = tuple(
        (header[i] if i < len(header) else "", cell) for i, cell in enumerate(row) if cell
    )
    text = "; ".join(f"{h}: {cell}" if h else cell for h, cell in cells)
    return text, cells


def _clean(text: str) -> str:
    """Text on one line: no terminal escapes or control characters, spaces collapsed."""
    text = _CONTROL.sub("", _ESCAPE.sub("", text))
    return _SPACE.sub(" ", text.replace("\u00a0", " ")).strip()
