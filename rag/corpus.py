"""Corpus management: add and remove articles in the corpus folder, list the indexed ones.

A change is staged beside the corpus and moved in only once the index built
with it has been swapped in, all under the build lock: a failed, interrupted
or killed `rag add` leaves the corpus folder as it was, and one killed between
the swap and the move is finished by the next build (`finish_interrupted`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lxml.etree as etree

from rag.embedding import Embedder
from rag.errors import CorpusError, IndexMismatchError, RagError
from rag.files import storage_error, write_atomically
from rag.index import (
    ArticleInfo,
    BuildSummary,
    build_index,
    build_lock,
    read_file_within_limits,
    read_manifest,
)
from rag.ingest import CORPUS_SUFFIXES, FEED_SUFFIXES, Article, check_not_linked, read_articles
from rag.settings import Settings

STAGING_PREFIX = ".staging-"  # a folder the corpus reader ignores (no article suffix)
_PLAN = "plan.json"

_KINDS = "a feed (.xml, .rss, .atom), an HTML page (.html, .htm) or a Markdown file (.md)"
_ATOM = "{http://www.w3.org/2005/Atom}entry"


@dataclass(frozen=True)
class CorpusChange:
    """What an add or a remove will do to the corpus folder, not yet done."""

    added: tuple[Article, ...]
    removed: tuple[Article, ...]
    # Each corpus file to write, by name, with its new bytes (None: to delete).
    contents: tuple[tuple[str, bytes | None], ...]


def add_articles(
    settings: Settings,
    paths: Sequence[Path],
    embedder: Embedder | None = None,
    *,
    report: Callable[[str], None] | None = None,
) -> tuple[CorpusChange, BuildSummary]:
    """Add article files to the corpus and rebuild the index, or change nothing."""
    with build_lock(settings, waiting=report):
        change = add_to_corpus(settings, paths)
        return change, apply_change(settings, change, embedder, report=report)


def remove_article(
    settings: Settings,
    reference: str,
    embedder: Embedder | None = None,
    *,
    report: Callable[[str], None] | None = None,
) -> tuple[CorpusChange, BuildSummary]:
    """Take an article out of the corpus and rebuild the index, or change nothing."""
    with build_lock(settings, waiting=report):
        change = remove_from_corpus(settings, reference)
        return change, apply_change(settings, change, embedder, report=report)


def add_to_corpus(settings: Settings, paths: Sequence[Path]) -> CorpusChange:
    """The change that copies article files into the corpus folder, after checking each one.

    Every file must parse, stay within the size limits and bring no article
    whose URL another corpus file already has; a file of the same name is
    replaced. Nothing is written: `apply_change` does that.
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
            if (size := path.stat().st_size) > settings.max_file_bytes:
                raise CorpusError(
                    f"{path}: is {size:,} bytes, over the limit of {settings.max_file_bytes:,} "
                    "(RAG_MAX_FILE_BYTES); split it into smaller files"
                )
            raw = _read_bytes(path)
            incoming[path.name] = (raw, read_file_within_limits(settings, path, raw))
        except OSError as exc:
            raise CorpusError(
                f"{path}: cannot be read ({exc.strerror}); nothing was added"
            ) from None
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

    return CorpusChange(
        added=tuple(a for _, articles in incoming.values() for a in articles),
        removed=tuple(a for name in incoming for a in present.get(name, [])),
        contents=tuple((name, raw) for name, (raw, _) in incoming.items()),
    )


def remove_from_corpus(settings: Settings, reference: str) -> CorpusChange:
    """The change that takes the article with this URL or slug out of the corpus folder.

    A file holding only that article is deleted; a feed holding others is
    rewritten without the article's ``<item>`` or ``<entry>``. Nothing is
    written: `apply_change` does that.
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
    content = _feed_without(path, raw, present[name], kept) if kept else None
    return CorpusChange((), (article,), ((name, content),))


def apply_change(
    settings: Settings,
    change: CorpusChange,
    embedder: Embedder | None = None,
    *,
    report: Callable[[str], None] | None = None,
) -> BuildSummary:
    """Rebuild the index with the change and, once it is swapped in, make the corpus match.

    The new files wait in a staging folder inside the corpus folder until the
    swap; if the build fails or is interrupted the corpus folder is untouched.
    Only new or changed passages are embedded: the rest come from the cache.
    """
    with build_lock(settings, waiting=report):
        finish_interrupted(settings)
        try:
            staging = _stage(settings, change)
        except OSError as exc:
            raise storage_error(exc, "nothing was changed") from None
        try:
            return build_index(
                settings,
                embedder,
                progress=report is not None,
                changes=dict(change.contents),
                on_swap=lambda: _move_in(settings.corpus_dir, staging),
                report=report,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def finish_interrupted(settings: Settings) -> None:
    """Finish or drop the changes of runs that died; call it holding `build_lock`.

    A staged change whose files the index in use already holds (the run died
    between the swap and the move) is moved in; any other is discarded.
    """
    folder = settings.corpus_dir
    try:
        leftovers = [p for p in folder.glob(STAGING_PREFIX + "*") if p.is_dir()]
    except OSError:
        return
    if not leftovers:
        return
    try:
        files = read_manifest(settings.index_dir)["corpus_files"]
        indexed = {f["name"]: f["sha256"] for f in files}
    except (RagError, KeyError, TypeError):
        indexed = {}
    for staging in leftovers:
        try:
            plan = json.loads((staging / _PLAN).read_text())
            if all(indexed.get(name) == digest for name, digest in plan.items()):
                _move_in(folder, staging)
        except (OSError, ValueError, AttributeError):
            pass  # an unfinished staging: the change never reached the index
        shutil.rmtree(staging, ignore_errors=True)


def _stage(settings: Settings, change: CorpusChange) -> Path:
    """Write the change's files into a fresh staging folder, its plan last."""
    settings.corpus_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=settings.corpus_dir)
    )
    try:
        plan: dict[str, str | None] = {}
        for name, content in change.contents:
            if content is not None:
                write_atomically(staging / name, content)
            plan[name] = hashlib.sha256(content).hexdigest() if content is not None else None
        write_atomically(staging / _PLAN, json.dumps(plan).encode())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _move_in(folder: Path, staging: Path) -> None:
    """Rename each staged file into the corpus folder and delete the removed ones."""
    plan = json.loads((staging / _PLAN).read_text())
    try:
        for name, digest in plan.items():
            if digest is None:
                (folder / name).unlink(missing_ok=True)
            elif (staging / name).exists():
                os.replace(staging / name, folder / name)
    except OSError as exc:
        raise storage_error(
            exc, "the index was rebuilt but the corpus folder not updated; run `rag index`"
        ) from None


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


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot be read ({exc.strerror})") from None
