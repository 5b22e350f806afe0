"""Ingest: read feeds, HTML pages and Markdown files into articles made of sections."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import lxml.etree as etree
import lxml.html
from markdown_it import MarkdownIt

from rag.errors import CorpusError

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


@dataclass(frozen=True)
class Section:
    """The text under one heading: its heading path, anchor and lines."""

    heading: str
    path: tuple[str, ...]
    anchor: str
    lines: tuple[str, ...]

    @property
    def path_text(self) -> str:
        return PATH_SEPARATOR.join(self.path)


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
    return paths


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
    title = _clean(item.findtext("title") or "")
    url = (item.findtext("link") or "").strip()
    html = item.findtext("content:encoded", namespaces=_NS) or item.findtext("description") or ""
    published = None
    if date := (item.findtext("pubDate") or "").strip():
        try:
            published = parsedate_to_datetime(date).isoformat()
        except (TypeError, ValueError):
            raise CorpusError(
                f"{path}: item {title!r} has an unreadable pubDate {date!r}"
            ) from None
    return _article(path, title, url, published, html)


def _atom_entry(path: Path, entry: etree._Element) -> Article:
    title = _clean(entry.findtext("atom:title", namespaces=_NS) or "")
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
            html = content.text or ""
    date = entry.findtext("atom:published", namespaces=_NS) or entry.findtext(
        "atom:updated", namespaces=_NS
    )
    published = None
    if date:
        try:
            published = datetime.fromisoformat(date.strip().replace("Z", "+00:00")).isoformat()
        except ValueError:
            raise CorpusError(f"{path}: entry {title!r} has an unreadable date {date!r}") from None
    return _article(path, title, url, published, html)


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
    return _article(path, title, url, dates[0] if dates else None, html)


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
    return _article(path, title or path.stem, url, meta.get("date") or None, html)


def _first_heading(doc: lxml.html.HtmlElement) -> str:
    found = doc.xpath("(//h1 | //h2)[1]")
    return _clean(found[0].text_content()) if found else ""


def _article(path: Path, title: str, url: str, published: str | None, html: str) -> Article:
    if not title:
        raise CorpusError(f"{path}: an article has no title")
    sections = _sections(title, html) if html.strip() else []
    if not sections:
        raise CorpusError(f"{path}: article {title!r} has no text")
    return Article(title, url or f"/corpus/{path.name}", published, path.name, tuple(sections))


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
        self.sections: list[Section] = []
        self.anchors: set[str] = set()
        self.next_suffix: dict[str, int] = {}  # per anchor base, the first suffix not yet tried

    def walk(self, element: lxml.html.HtmlElement) -> None:
        for child in element:
            if not isinstance(child.tag, str):  # comments, processing instructions
                continue
            tag = child.tag.lower()
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
                self.lines.extend(_table_rows(child))
            elif tag == "pre":
                self.lines.extend(_pre_lines(child))
            elif tag in ("img", "script", "style", "noscript", "iframe", "svg", "form"):
                continue
            elif tag == "figure" and not child.xpath(".//table"):
                if caption := _clean(" ".join(child.xpath(".//figcaption//text()"))):
                    self.lines.append(caption)
            elif len(child):
                self.walk(child)
            else:
                self._add(child.text_content())

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
            self.sections.append(Section(self.heading, path, self.anchor, tuple(self.lines)))
        self.lines = []

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
        self.lines.extend(_flattened_table(lines) or lines)

    def _list(self, element: lxml.html.HtmlElement) -> None:
        for item in element.iterchildren("li"):
            nested = [n for n in item if isinstance(n.tag, str) and n.tag in ("ul", "ol")]
            for n in nested:
                item.remove(n)
            self._add(item.text_content())
            for n in nested:
                self._list(n)


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


def _flattened_table(lines: list[str]) -> list[str] | None:
    """Rows of a table flattened into a paragraph with ``<br>``, each prefixed by the header.

    The header is recognisable as a short first line without sentence
    punctuation or figures, followed by at least two rows.
    """
    if len(lines) < 3:
        return None
    header = lines[0]
    if len(header.split()) > 16 or re.search(r"[.!?;:]$|\d", header):
        return None
    return [f"{header}: {row}" for row in lines[1:]]


def _table_rows(table: lxml.html.HtmlElement) -> list[str]:
    """Each row as one line that repeats its header cells: ``Country: US; Salary: $1``."""
    rows = [
        [_clean(cell.text_content()) for cell in tr if cell.tag in ("td", "th")]
        for tr in table.iter("tr")
    ]
    rows = [row for row in rows if any(row)]
    lines = []
    if caption := _clean(" ".join(table.xpath("./caption//text()"))):
        lines.append(caption)
    if not rows:
        return lines
    header, body = rows[0], rows[1:]
    if not body:
        return [*lines, "; ".join(c for c in header if c)]
    lines.extend(_header_row(header, row) for row in body)
    return lines


def _pre_lines(pre: lxml.html.HtmlElement) -> list[str]:
    """Preformatted text: ASCII tables become header-carrying rows, other lines stay lines."""
    if pre.text and pre.text.strip().endswith("CopyEdit"):
        pre.text = ""  # the "plaintext Copy Edit" buttons of a pasted chat transcript
    raw = [_BOX_DRAWING.sub(" ", line) for line in _split_at_breaks(pre)]
    raw = [line for part in raw for line in part.splitlines() if re.search(r"\w", line)]
    content = [line for line in raw if not _ASCII_RULE.match(line)]
    grid = [line for line in content if "|" in line]
    if len(grid) < 3 or len(grid) < len(content) - 2:
        return [_clean(line) for line in content]
    lines = [_clean(line) for line in content if "|" not in line]
    rows = [[_clean(c) for c in line.strip().strip("|").split("|")] for line in grid]
    # Single-cell rows above the header are the table's title.
    while rows and len([c for c in rows[0] if c]) < 2:
        lines.extend(c for c in rows.pop(0) if c)
    if rows:
        header, body = rows[0], rows[1:]
        lines.extend(_header_row(header, row) for row in body if any(row))
    return lines


def _header_row(header: list[str], row: list[str]) -> str:
    """``Header: cell; Header: cell`` for the non-empty cells of a row."""
    return "; ".join(
        f"{header[i]}: {cell}" if i < len(header) and header[i] else cell
        for i, cell in enumerate(row)
        if cell
    )


def _clean(text: str) -> str:
    return _SPACE.sub(" ", text.replace("\u00a0", " ")).strip()
