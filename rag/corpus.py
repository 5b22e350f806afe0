"""Corpus management: add and remove articles in the corpus folder, list the indexed ones."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lxml.etree as etree

from rag.embedding import Embedder
from rag.errors import CorpusError, IndexMismatchError
from rag.files import write_atomically
from rag.index import ArticleInfo, BuildSummary, build_index, read_manifest
from rag.ingest import (
    CORPUS_SUFFIXES,
    FEED_SUFFIXES,
    Article,
    check_not_linked,
    read_articles,
)
from rag.settings import Settings

_KINDS = "a feed (.xml, .rss, .atom), an HTML page (.html, .htm) or a Markdown file (.md)"
_ATOM = "{http://www.w3.org/2005/Atom}entry"


@dataclass(frozen=True)
class CorpusChange:
    """What an add or a remove did to the corpus folder, and the means to undo it."""

    added: tuple[Article, ...]
    removed: tuple[Article, ...]
    # Each file written or deleted, with its bytes before (None: it did not exist).
    previous: tuple[tuple[Path, bytes | None], ...]

    def undo(self) -> None:
        """Put every touched file back as it was."""
        for path, content in reversed(self.previous):
            if content is None:
                path.unlink(missing_ok=True)
            else:
                write_atomically(path, content)


def add_to_corpus(settings: Settings, paths: Sequence[Path]) -> CorpusChange:
    """Copy article files into the corpus folder, after checking that each one reads.

    Nothing is copied unless every file parses and none brings an article whose
    URL another corpus file already has; a file of the same name is replaced.
    """
    if not paths:
        raise CorpusError("no files to add")
    incoming: dict[str, tuple[bytes, list[Article]]] = {}
    for path in paths:
        if path.suffix.lower() not in CORPUS_SUFFIXES:
            raise CorpusError(f"{path}: is not {_KINDS}; nothing was added")
        if not path.is_file():
            raise CorpusError(f"{path}: no such file; nothing was added")
        if path.name in incoming:
            raise CorpusError(f"two files are named {path.name}; nothing was added")
        try:
            check_not_linked(path)
            raw = _read_bytes(path)
            incoming[path.name] = (raw, read_articles(path, raw))
        except CorpusError as exc:
            raise CorpusError(f"{exc}; nothing was added") from None

    present = _corpus_articles(settings.corpus_dir)
    owners = {a.url: name for name, found in present.items() if name not in incoming for a in found}
    for name, (_, articles) in incoming.items():
        for article in articles:
            if owner := owners.get(article.url):
                raise CorpusError(
                    f"{name}: article {article.url} is already in the corpus from {owner}; "
                    f"remove it first (`rag remove {article.slug}`) or add the file as {owner} "
                    f"to replace it; nothing was added"
                )
            owners[article.url] = name

    settings.corpus_dir.mkdir(parents=True, exist_ok=True)
    change = CorpusChange(
        added=tuple(a for _, articles in incoming.values() for a in articles),
        removed=tuple(a for name in incoming for a in present.get(name, [])),
        previous=tuple(
            (target, _read_bytes(target) if target.exists() else None)
            for target in (settings.corpus_dir / name for name in incoming)
        ),
    )
    _apply(change, {settings.corpus_dir / name: raw for name, (raw, _) in incoming.items()})
    return change


def remove_from_corpus(settings: Settings, reference: str) -> CorpusChange:
    """Take the article with this URL or slug out of the corpus folder.

    A file holding only that article is deleted; a feed holding others is
    rewritten without the article's ``<item>`` or ``<entry>``.
    """
    reference = reference.strip()
    present = _corpus_articles(settings.corpus_dir)
    matches = [
        (name, article)
        for name, articles in present.items()
        for article in articles
        if reference
        and (reference.rstrip("/") == article.url.rstrip("/") or reference == article.slug)
    ]
    if not matches:
        raise CorpusError(
            f"no article {reference!r} in {settings.corpus_dir}; "
            "`rag list` shows each article's slug and URL"
        )
    if len({(name, article.url) for name, article in matches}) > 1:
        urls = ", ".join(sorted(article.url for _, article in matches))
        raise CorpusError(f"{reference!r} names several articles ({urls}); give the URL")
    name, article = matches[0]
    if sum(len(articles) for articles in present.values()) == 1:
        raise CorpusError(
            f"{article.title!r} is the corpus's only article; add another before removing it"
        )
    path = settings.corpus_dir / name
    raw = _read_bytes(path)
    kept = [a for a in present[name] if a.url != article.url]
    change = CorpusChange((), (article,), ((path, raw),))
    _apply(change, {path: _feed_without(path, raw, present[name], kept) if kept else None})
    return change


def rebuild_or_undo(
    settings: Settings, change: CorpusChange, embedder: Embedder | None = None
) -> BuildSummary:
    """Rebuild the index after a corpus change; if the build fails, undo the change.

    Only new or changed passages are embedded: the rest come from the cache.
    """
    try:
        return build_index(settings, embedder, progress=False)
    except BaseException:
        change.undo()
        raise


def list_articles(settings: Settings) -> list[ArticleInfo]:
    """The articles of the built index, in corpus order, without loading the index."""
    path = settings.index_dir.resolve()  # one build, even if the link moves meanwhile
    read_manifest(path)
    try:
        rows = json.loads((path / "articles.json").read_text(encoding="utf-8"))
        return [ArticleInfo(**row) for row in rows]
    except (OSError, ValueError, TypeError) as exc:
        raise IndexMismatchError(
            f"the index at {path} is damaged ({type(exc).__name__}); run `rag index` to rebuild"
        ) from None


def _corpus_articles(corpus_dir: Path) -> dict[str, list[Article]]:
    """The articles of each file now in the corpus folder, by file name."""
    if not corpus_dir.is_dir():
        return {}
    files = sorted(p for p in corpus_dir.iterdir() if p.suffix.lower() in CORPUS_SUFFIXES)
    for path in files:
        check_not_linked(path)  # before reading: it might point at /dev/zero
    return {path.name: read_articles(path) for path in files}


def _feed_without(path: Path, raw: bytes, articles: list[Article], kept: list[Article]) -> bytes:
    """The feed's bytes without the items of the articles not in ``kept``.

    ``read_articles`` gives one article per item, in document order, so an
    item is found by its position rather than by re-reading its link.
    """
    if path.suffix.lower() not in FEED_SUFFIXES:
        raise CorpusError(f"{path}: holds several articles but is not a feed")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, huge_tree=True, strip_cdata=False
    )
    root = etree.fromstring(raw, parser)
    items = root.findall("channel/item") if etree.QName(root).localname == "rss" else []
    items = items or root.findall(_ATOM)
    if len(items) != len(articles):
        raise CorpusError(f"{path}: cannot match its items to its articles; edit it by hand")
    keep = {a.url for a in kept}
    for item, article in zip(items, articles, strict=True):
        if article.url not in keep:
            item.getparent().remove(item)
    tree = root.getroottree()
    rewritten = etree.tostring(
        tree, xml_declaration=True, encoding=tree.docinfo.encoding or "UTF-8"
    )
    if [a.url for a in read_articles(path, rewritten)] != [a.url for a in kept]:
        raise CorpusError(f"{path}: rewriting the feed went wrong; edit it by hand")
    return rewritten


def _apply(change: CorpusChange, contents: dict[Path, bytes | None]) -> None:
    """Write (or, for None, delete) each file; on failure put back what was done."""
    try:
        for path, content in contents.items():
            if content is None:
                path.unlink()
            else:
                write_atomically(path, content)
    except OSError as exc:
        change.undo()
        raise CorpusError(f"cannot change {path} ({exc.strerror}); nothing was changed") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot be read ({exc.strerror})") from None
