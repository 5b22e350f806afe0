"""Index: build, persist (atomically) and load the FAISS, BM25 and sentence stores of the corpus."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import bm25s
import faiss
import numpy as np

from rag.chunking import Passage, chunk_articles
from rag.embedcache import cached_embeddings
from rag.embedding import Embedder, text_key
from rag.encoder import exported_encoder, install_encoder
from rag.errors import CorpusError, IndexMismatchError, IndexMissingError, RagError
from rag.files import storage_error
from rag.ingest import (
    CORPUS_SUFFIXES,
    Article,
    CorpusFile,
    Shape,
    check_not_linked,
    corpus_files,
    read_articles,
)
from rag.settings import Settings
from rag.store import FileStore, Store

if TYPE_CHECKING:
    from rag.pgstore import GenerationWriter
from rag.tokens import english_stems, proper_words, tokenize, vocabulary

# 2: sentences get their own FAISS index; 3: "LLMs" is tokenised "llm";
# 4: the manifest records every file's size and SHA-256; table rows and list items are
# whole units with their shapes (cells, introduction); 5: initialisms ("U.S.") are words;
# 6: bracketed and name letters ("83(b)" -> "83b", "Series B" -> "seri", "seriesb");
# 7: every unit also embedded under its title and section path (contexts.npy)
FORMAT_VERSION = 7
MANIFEST = "manifest.json"
BUILDS_SUFFIX = ".builds"  # sibling folder holding every build; `index` links to the current one
LOCK_FILE = "build.lock"
_KEEP_BUILDS = 3
# Every index file a build writes (folders: at least one file inside), all recorded in the manifest.
_INDEX_FILES = (
    "dense.faiss",
    "sentences.faiss",
    "sentences.npy",
    "contexts.npy",
    "passage_vectors.npy",
    "bm25/",
    "bm25_sentences/",
    "passages.jsonl",
    "articles.json",
    "embedding_cache.npz",
)
_COUNTS = ("articles", "sections", "passages", "sentences")


@dataclass(frozen=True)
class ArticleInfo:
    """An indexed article as listed by the API and the CLI."""

    title: str
    url: str
    slug: str
    published: str | None
    source: str
    sections: int
    passages: int


@dataclass(frozen=True)
class BuildSummary:
    articles: int
    sections: int
    passages: int
    sentences: int
    embedded: int  # texts that were not in the embedding cache
    seconds: float
    path: Path


@dataclass(frozen=True)
class Index:
    """A loaded index: everything retrieval and answering read, nothing they write."""

    manifest: dict
    passages: tuple[Passage, ...]
    articles: tuple[ArticleInfo, ...]
    store: Store  # what retrieval searches: FAISS and bm25s here, or PostgreSQL
    passage_vectors: np.ndarray  # the unit vectors in the dense index, row per passage
    sentence_vectors: np.ndarray  # one row per sentence of every passage, in order
    context_vectors: np.ndarray  # the same sentences under their title and section path
    sentence_start: np.ndarray  # passage i's sentences are rows start[i]:start[i + 1]
    sentence_tokens: tuple[frozenset[str], ...]  # lexical tokens of every sentence, same order
    heading_tokens: tuple[frozenset[str], ...]  # tokens of each passage's title and section path
    idf: dict[str, float]  # inverse document frequency of each token over passages
    path: Path
    words: frozenset[str] = frozenset()  # lower-case words of the passages, for spelling
    word_choices: tuple[str, ...] = ()  # the same, sorted, for fuzzy matching
    proper_words: frozenset[str] = frozenset()  # words only ever written as names ("europe")
    passage_tokens: tuple[frozenset[str], ...] = ()  # each passage's tokens and heading's

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def built_at(self) -> str:
        return self.manifest["built_at"]

    @property
    def generation(self) -> str:
        return self.store.generation


def builds_dir(index_dir: Path) -> Path:
    return index_dir.with_name(index_dir.name + BUILDS_SUFFIX)


_held = threading.local()  # the lock files this thread holds, so the lock is re-entrant


@contextmanager
def build_lock(settings: Settings, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the one lock over building, swapping and pruning the index (and changing the corpus).

    A second build waits its turn (``waiting`` is told once, with the holder's
    process id) instead of racing the first; the kernel drops the lock of a
    process that dies, so a killed build never blocks the next one. Re-entrant
    within a thread.
    """
    root = builds_dir(settings.index_dir)
    path = (root / LOCK_FILE).absolute()
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(path, "a+")  # noqa: SIM115 - held open for the whole block below
    except OSError as exc:
        raise storage_error(exc, "nothing was changed") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            if waiting is not None:
                waiting(f"another build (process {holder}) is running; waiting for it to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:  # who holds the lock, for the next one's message; only a courtesy
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
        except OSError:
            pass
        held.add(path)
        try:
            if settings.database_url:  # builds on other machines share the database
                from rag import pgstore

                with pgstore.build_lock(settings, waiting):
                    yield
            else:
                yield
        finally:
            held.discard(path)
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_index(
    settings: Settings,
    embedder: Embedder | None = None,
    *,
    progress: bool = False,
    changes: Mapping[str, bytes | None] | None = None,
    on_swap: Callable[[], None] | None = None,
    report: Callable[[str], None] | None = None,
    embed: bool = True,
) -> BuildSummary:
    """Read the corpus, embed it and swap the new index in atomically.

    The build is written to a fresh folder under ``<index>.builds/``, checked
    against its manifest (every file there, at its recorded size and SHA-256),
    and only then does the ``index`` symlink move to it (``os.replace`` of a
    link is atomic), so a failed or interrupted build never touches the index
    in use. The whole build holds `build_lock`.

    ``changes`` builds the corpus as it will be: file name to new bytes (None:
    the file is gone); ``on_swap`` runs right after the swap, with SIGTERM and
    SIGINT held off, to make the corpus folder match. With a database, ``embed=False``
    leaves the embedding of new texts to ``rag index --worker`` processes (see
    `rag.embedcache`).
    """
    with build_lock(settings, waiting=report):
        try:
            return _build(settings, embedder, progress, changes or {}, on_swap, report, embed)
        except OSError as exc:
            raise storage_error(exc, "the index in use was not changed") from None


def _build(
    settings: Settings,
    embedder: Embedder | None,
    progress: bool,
    changes: Mapping[str, bytes | None],
    on_swap: Callable[[], None] | None,
    report: Callable[[str], None] | None,
    embed: bool = True,
) -> BuildSummary:
    say = report or (lambda message: None)
    started = time.perf_counter()
    articles, files = _read_corpus(settings, changes)
    passages = chunk_articles(articles, settings)
    _check_passages(settings, articles, passages)
    sentences = [s for p in passages for s in p.sentence_texts()]
    contexts = [c for p in passages for c in p.context_texts()]
    texts = [p.indexed_text for p in passages] + sentences + contexts
    keys = [text_key(settings.model, t) for t in texts]
    cache, embedded = cached_embeddings(
        settings,
        keys,
        texts,
        embedder,
        lambda: _load_cache(settings.index_dir),
        heading=f"read {len(files)} files: {len(articles)} articles, {len(passages)} passages",
        report=say,
        progress=progress,
        embed=embed,
    )
    vectors = np.stack([cache[k] for k in keys]).astype(np.float32)
    passage_vectors = vectors[: len(passages)]
    sentence_vectors = vectors[len(passages) : len(passages) + len(sentences)]
    context_vectors = vectors[len(passages) + len(sentences) :]
    # Keep only what this build uses, so the cache does not grow with every edit.
    cache = {k: cache[k] for k in dict.fromkeys(keys)}
    # Serving encodes questions with this export alone (no PyTorch); it is made once a model.
    encoder = exported_encoder(
        settings.model_cache_dir, settings.model, lambda: embedder or Embedder(settings.model)
    )

    root = builds_dir(settings.index_dir)
    root.mkdir(parents=True, exist_ok=True)
    # The process id in the name lets a later prune tell a build in progress from a dead one's.
    build = Path(tempfile.mkdtemp(prefix=f"build-{os.getpid()}-", dir=root))
    swapped = False
    try:
        say("writing the index")
        manifest = _write(
            build,
            settings,
            int(vectors.shape[1]),
            articles,
            files,
            passages,
            passage_vectors,
            sentence_vectors,
            context_vectors,
            cache,
            encoder,
        )
        verify_files(build, manifest)
        with _generation_writer(settings) as writer:
            if writer is not None:
                say("writing the index to the database")
                writer.write(load_build(build, manifest))
            with _signals_held():
                if writer is not None:
                    writer.activate()  # the database's swap: every replica moves to it
                _swap_in(settings.index_dir, build)
                swapped = True
                if on_swap is not None:
                    on_swap()
    except BaseException as exc:
        if not swapped:
            shutil.rmtree(build, ignore_errors=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(build)  # numpy's writes do not say which file failed
        raise
    _prune(root, keep=build)
    if settings.database_url:
        from rag import pgstore

        pgstore.prune(settings)
    return BuildSummary(
        articles=len(articles),
        sections=sum(len(a.sections) for a in articles),
        passages=len(passages),
        sentences=len(sentences),
        embedded=embedded,
        seconds=time.perf_counter() - started,
        path=build,
    )


@contextmanager
def _generation_writer(settings: Settings) -> Iterator[GenerationWriter | None]:
    """The database transaction a build writes its generation in, when there is a database."""
    if not settings.database_url:
        yield None
        return
    from rag.pgstore import GenerationWriter

    with GenerationWriter(settings) as writer:
        yield writer


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the block ends: the swap and what goes with it are one step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _read_corpus(
    settings: Settings, changes: Mapping[str, bytes | None]
) -> tuple[list[Article], list[CorpusFile]]:
    """The articles of the corpus folder with ``changes`` applied, each file within the limits."""
    folder = settings.corpus_dir
    if folder.exists() and not folder.is_dir():
        raise CorpusError(f"corpus folder {folder} is not a folder")
    if not folder.exists() and not changes:
        raise CorpusError(f"corpus folder {folder} does not exist; create it and add articles")
    names = set(changes)
    if folder.is_dir():
        try:
            names.update(p.name for p in folder.iterdir() if p.suffix.lower() in CORPUS_SUFFIXES)
        except OSError as exc:
            raise CorpusError(f"cannot read corpus folder {folder} ({exc.strerror})") from None
    articles: list[Article] = []
    files: list[CorpusFile] = []
    for name in sorted(names):
        path = folder / name
        raw = changes[name] if name in changes else _read_within_limit(settings, path)
        if raw is None:
            continue
        file_articles = read_file_within_limits(settings, path, raw)
        files.append(CorpusFile.of(path, raw))
        articles.extend(file_articles)
    if not files:
        raise CorpusError(f"no articles in {folder}: add .xml/.rss feeds, .html pages or .md files")
    return articles, files


def _read_within_limit(settings: Settings, path: Path) -> bytes:
    check_not_linked(path)  # before reading: a link would publish what it points to
    try:
        size = path.stat().st_size
        if size > settings.max_file_bytes:
            raise CorpusError(_too_big(settings, path, size))
        return path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot be read ({exc.strerror})") from None


def _too_big(settings: Settings, path: Path, size: int) -> str:
    return (
        f"{path}: is {size:,} bytes, over the limit of {settings.max_file_bytes:,} "
        "(RAG_MAX_FILE_BYTES); split it into smaller files"
    )


def read_file_within_limits(settings: Settings, path: Path, raw: bytes) -> list[Article]:
    """The articles of one corpus file, refused with a clear message past the size limits."""
    if len(raw) > settings.max_file_bytes:
        raise CorpusError(_too_big(settings, path, len(raw)))
    articles = read_articles(path, raw)
    sections = sum(len(a.sections) for a in articles)
    if sections > settings.max_sections_per_file:
        raise CorpusError(
            f"{path}: has {sections:,} sections, over the limit of "
            f"{settings.max_sections_per_file:,} (RAG_MAX_SECTIONS_PER_FILE); split it"
        )
    return articles


def _check_passages(settings: Settings, articles: list[Article], passages: list[Passage]) -> None:
    source = {a.url: a.source for a in articles}
    per_file: dict[str, int] = {}
    for passage in passages:
        name = source[passage.article_url]
        per_file[name] = per_file.get(name, 0) + 1
    for name, count in per_file.items():
        if count > settings.max_passages_per_file:
            raise CorpusError(
                f"{name}: makes {count:,} passages, over the limit of "
                f"{settings.max_passages_per_file:,} (RAG_MAX_PASSAGES_PER_FILE); split it"
            )


def dense_index(vectors: np.ndarray, kind: str) -> faiss.Index:
    """An inner-product FAISS index over unit vectors: exact (``flat``) or ``hnsw``."""
    dimension = vectors.shape[1]
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 96
    else:
        index = faiss.IndexFlatIP(dimension)
    index.add(vectors)
    return index


def _write(
    build: Path,
    settings: Settings,
    dimension: int,
    articles: list[Article],
    files: list,
    passages: list[Passage],
    passage_vectors: np.ndarray,
    sentence_vectors: np.ndarray,
    context_vectors: np.ndarray,
    cache: dict[str, np.ndarray],
    encoder: Path,
) -> dict:
    # Each index picks its kind by its own size: there are ~6 sentences a passage, so the
    # sentence index needs HNSW long before the passage index does.
    kinds = {
        name: settings.index_kind
        if settings.index_kind != "auto"
        else ("hnsw" if len(vectors) >= settings.hnsw_from_vectors else "flat")
        for name, vectors in (("passages", passage_vectors), ("sentences", sentence_vectors))
    }
    _write_faiss(dense_index(passage_vectors, kinds["passages"]), build / "dense.faiss")
    _write_faiss(dense_index(sentence_vectors, kinds["sentences"]), build / "sentences.faiss")
    np.save(build / "sentences.npy", sentence_vectors.astype(np.float16))
    np.save(build / "contexts.npy", context_vectors.astype(np.float16))
    np.save(build / "passage_vectors.npy", passage_vectors)

    bm25 = bm25s.BM25()
    bm25.index([tokenize(p.indexed_text) for p in passages], show_progress=False)
    bm25.save(str(build / "bm25"))
    # Sentences are also searched on their own (under their heading), so one sentence that
    # answers is found even when the rest of its passage talks of something else.
    sentence_bm25 = bm25s.BM25()
    sentence_bm25.index(
        [
            tokenize(f"{p.section_path.rsplit(' › ', 1)[-1]}. {t}")
            for p in passages
            for t in p.sentence_texts()
        ],
        show_progress=False,
    )
    sentence_bm25.save(str(build / "bm25_sentences"))

    keys = list(cache)
    np.savez(
        build / "embedding_cache.npz",
        keys=np.array(keys),
        vectors=np.stack([cache[k] for k in keys]) if keys else np.zeros((0, 1)),
    )
    (build / "passages.jsonl").write_text(
        "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in passages),
        encoding="utf-8",
    )
    counts = {a.url: 0 for a in articles}
    for p in passages:
        counts[p.article_url] += 1
    infos = [
        ArticleInfo(a.title, a.url, a.slug, a.published, a.source, len(a.sections), counts[a.url])
        for a in articles
    ]
    (build / "articles.json").write_text(json.dumps([asdict(i) for i in infos], indent=1))
    question_encoder = install_encoder(encoder, build)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": settings.model,
        "dimension": dimension,
        "index_kind": kinds,
        "chunking": _chunking(settings),
        "builder": builder(),
        "corpus_files": [asdict(f) for f in files],
        "counts": {
            "articles": len(articles),
            "sections": sum(len(a.sections) for a in articles),
            "passages": len(passages),
            "sentences": len(sentence_vectors),
        },
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "question_encoder": question_encoder,
        "files": _file_records(build),
    }
    # The manifest is written last: a folder without one is never a usable index.
    with open(build / MANIFEST, "w") as out:
        out.write(json.dumps(manifest, indent=1))
        out.flush()
        os.fsync(out.fileno())
    os.chmod(build, 0o755)
    return manifest


def _write_faiss(index: faiss.Index, path: Path) -> None:
    """Write a FAISS index through Python's files: ``faiss.write_index`` only prints a failed
    close (a full disk), leaving a short file and no error."""
    with open(path, "wb") as out:
        out.write(faiss.serialize_index(index).tobytes())
        out.flush()
        os.fsync(out.fileno())


def _file_records(build: Path) -> dict[str, dict[str, int | str]]:
    """Every file of a build (but the manifest) with its size and SHA-256, by relative path."""
    return {
        path.relative_to(build).as_posix(): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(build.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stored:
        while block := stored.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_files(build: Path, manifest: dict, *, skip: tuple[str, ...] = ()) -> None:
    """Check that every file the manifest names is there at its recorded size and SHA-256.

    Sizes are checked before anything is read, so a truncated or crafted file is
    refused before FAISS or numpy allocate for it.
    """
    records = manifest["files"]
    for name, record in records.items():
        path = build / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise IndexMismatchError(
                f"the index lacks {name}; run `rag index` to rebuild"
            ) from None
        if size != record["bytes"]:
            raise IndexMismatchError(
                f"the index file {name} is {size} bytes, its manifest says {record['bytes']}; "
                "run `rag index` to rebuild"
            )
    for name, record in records.items():
        if name not in skip and _sha256(build / name) != record["sha256"]:
            raise IndexMismatchError(
                f"the index file {name} does not match its manifest's SHA-256; "
                "run `rag index` to rebuild"
            )


def _swap_in(index_dir: Path, build: Path) -> None:
    if index_dir.exists() and not index_dir.is_symlink():
        if any(index_dir.iterdir()):
            raise RagError(
                f"{index_dir} is a folder, not an index link; move it away and run rag index"
            )
        index_dir.rmdir()
    link = index_dir.with_name(f".{index_dir.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(build, index_dir.parent))
    os.replace(link, index_dir)


def _prune(root: Path, keep: Path) -> None:
    """Remove old builds (a running server has its index in memory) and leftovers of dead ones.

    Runs under `build_lock`. A build without a manifest is removed only when the
    process named in its folder is gone: a live one may still be writing it.
    """
    builds = sorted(
        (p for p in root.glob("build-*") if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    complete = [p for p in builds if (p / MANIFEST).exists()]
    unfinished = [p for p in builds if p not in complete and not _writer_alive(p)]
    for old in unfinished + complete[:-_KEEP_BUILDS]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def _writer_alive(build: Path) -> bool:
    """Whether the process that named this build folder (``build-<pid>-…``) still runs."""
    pid = build.name.split("-")[1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False  # this process holds the lock, so an unfinished build of its own is dead
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load_cache(index_dir: Path) -> dict[str, np.ndarray]:
    path = index_dir / "embedding_cache.npz"
    try:
        with np.load(path) as stored:
            return dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    except (OSError, ValueError, KeyError):
        return {}  # no previous build, or an unreadable cache: embed everything


def index_is_current(settings: Settings) -> bool:
    """Whether the index was built, in this format, with these settings, from the corpus
    folder as it is now (same files, same SHA-256): rebuilding it would change nothing."""
    try:
        if settings.database_url:
            from rag.pgstore import active_manifest

            manifest = active_manifest(settings) or {}
        else:
            manifest = read_manifest(settings.index_dir)
            verify_files(settings.index_dir, manifest)
        files = [CorpusFile.of(p, p.read_bytes()) for p in corpus_files(settings.corpus_dir)]
    except (RagError, OSError):
        return False
    return (
        manifest.get("format_version") == FORMAT_VERSION  # a database's too
        and manifest.get("model") == settings.model
        and isinstance(manifest.get("question_encoder"), dict)  # older builds have none
        and manifest.get("corpus_files") == [asdict(f) for f in files]
        and manifest.get("chunking") == _chunking(settings)
        and manifest.get("builder") == builder()
    )


# What turns corpus files into passages, tokens and IDF: a change to any of them changes an
# index built from the same files, so an index built by other code is out of date.
_BUILDER_MODULES = ("ingest", "chunking", "tokens", "embedding", "index")
_BUILDER_LIBRARIES = ("lxml", "markdown-it-py", "pysbd", "bm25s", "PyStemmer", "english-words")


@functools.cache
def builder() -> dict[str, str]:
    """The digest of the code and parsing libraries that build an index, for its manifest."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _BUILDER_MODULES:
        digest.update((here / f"{name}.py").read_bytes())
    for path in sorted((here / "data").glob("*.txt")):
        digest.update(path.read_bytes())
    for library in _BUILDER_LIBRARIES:
        digest.update(f"{library}=={metadata.version(library)}".encode())
    return {"code": digest.hexdigest()[:16]}


def _chunking(settings: Settings) -> dict[str, int]:
    """The chunking settings an index records in its manifest and was built with."""
    return {
        "chunk_words": settings.chunk_words,
        "chunk_max_words": settings.chunk_max_words,
        "chunk_overlap_sentences": settings.chunk_overlap_sentences,
    }


def read_manifest(index_dir: Path) -> dict:
    """The manifest of the index at ``index_dir``; raises when missing, unreadable or incomplete."""
    path = index_dir / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise IndexMissingError(f"no index at {index_dir}; run `rag index` to build it") from None
    except OSError as exc:
        raise IndexMismatchError(
            f"the index manifest {path} cannot be read ({exc.strerror}); "
            "check the folder's permissions or run `rag index`"
        ) from None
    try:
        manifest = json.loads(text)
    except ValueError:
        raise IndexMismatchError(
            f"the index manifest {path} is unreadable; run `rag index` to rebuild"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexMismatchError(
            f"the index at {index_dir} has format version "
            f"{manifest.get('format_version') if isinstance(manifest, dict) else '?'}, "
            f"this version reads {FORMAT_VERSION}; run `rag index` to rebuild"
        )
    if not _well_formed(manifest):
        raise IndexMismatchError(
            f"the index manifest {path} lacks its counts, model, build time or file list; "
            "run `rag index` to rebuild"
        )
    return manifest


def _well_formed(manifest: dict) -> bool:
    counts, files = manifest.get("counts"), manifest.get("files")
    return (
        isinstance(counts, dict)
        and all(type(counts.get(name)) is int and counts[name] >= 0 for name in _COUNTS)
        and isinstance(manifest.get("model"), str)
        and isinstance(manifest.get("built_at"), str)
        and type(manifest.get("dimension")) is int
        and isinstance(files, dict)
        and all(
            isinstance(r, dict) and type(r.get("bytes")) is int and isinstance(r.get("sha256"), str)
            for r in files.values()
        )
        and all(
            any(name == wanted or name.startswith(wanted) for name in files)
            for wanted in _INDEX_FILES
        )
    )


def load_index(settings: Settings, embedder: Embedder | None = None) -> Index:
    """Load the index read-only, checking it against the settings and its own manifest.

    With a database (``RAG_DATABASE_URL``) this is its active generation, searched there.
    """
    if settings.database_url:
        from rag.pgstore import load_active

        return load_active(settings, embedder)
    path = settings.index_dir.resolve()
    manifest = read_manifest(path)
    check_manifest(settings, manifest, embedder)
    try:  # the embedding cache is only read by the next build, which tolerates a bad one
        verify_files(path, manifest, skip=("embedding_cache.npz",))
    except OSError as exc:
        raise IndexMismatchError(
            f"the index at {path} cannot be read ({exc.strerror}); "
            "check the folder's permissions or run `rag index`"
        ) from None
    return load_build(path, manifest)


def check_manifest(settings: Settings, manifest: dict, embedder: Embedder | None) -> None:
    """Refuse an index of another format, built with another model, or of another dimension
    than the model's."""
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexMismatchError(
            f"the index has format version {manifest.get('format_version')!r}, this version "
            f"reads {FORMAT_VERSION}; run `rag index` to rebuild"
        )
    if manifest.get("model") != settings.model:
        raise IndexMismatchError(
            f"the index was built with model {manifest.get('model')!r} but the settings ask for "
            f"{settings.model!r}; run `rag index` to rebuild with this model"
        )
    # Without a loaded model, the question encoder the build records says what the model gives.
    encoder = manifest.get("question_encoder")
    recorded = encoder.get("dimension") if isinstance(encoder, dict) else None
    gives = embedder.dimension if embedder is not None else recorded
    if gives and manifest.get("dimension") != gives:
        raise IndexMismatchError(
            f"the index holds {manifest.get('dimension')}-dimensional vectors but the model gives "
            f"{gives}; run `rag index` to rebuild"
        )


def passage_of(row: dict) -> Passage:
    """A passage from its stored record (``dataclasses.asdict`` of it, through JSON)."""
    return Passage(
        **{
            **row,
            "sentences": tuple(tuple(s) for s in row["sentences"]),
            "shapes": tuple(Shape.from_dict(s) for s in row.get("shapes", ())),
        }
    )


def load_build(path: Path, manifest: dict) -> Index:
    """The index of a verified build folder, with its FAISS and bm25s store."""
    try:
        dense = faiss.read_index(str(path / "dense.faiss"))
        passage_vectors = np.load(path / "passage_vectors.npy")
        bm25 = bm25s.BM25.load(str(path / "bm25"))
        sentence_bm25 = bm25s.BM25.load(str(path / "bm25_sentences"))
        sentence_vectors = np.load(path / "sentences.npy").astype(np.float32)
        context_vectors = np.load(path / "contexts.npy").astype(np.float32)
        sentence_dense = faiss.read_index(str(path / "sentences.faiss"))
        passages = tuple(
            passage_of(row)
            for row in map(json.loads, (path / "passages.jsonl").read_text("utf-8").splitlines())
        )
        articles = tuple(
            ArticleInfo(**row) for row in json.loads((path / "articles.json").read_text())
        )
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise IndexMismatchError(
            f"the index at {path} is damaged ({type(exc).__name__}); run `rag index` to rebuild"
        ) from None
    counts = manifest.get("counts", {})
    starts = np.cumsum([0, *(len(p.sentences) for p in passages)])
    if (
        dense.ntotal != len(passages)
        or dense.d != manifest.get("dimension")
        or counts.get("passages") != len(passages)
        or len(sentence_vectors) != starts[-1]
        or context_vectors.shape != sentence_vectors.shape
        or sentence_dense.ntotal != starts[-1]
        or passage_vectors.shape != (len(passages), dense.d)
        or counts.get("articles") != len(articles)
        or counts.get("sentences") != starts[-1]
        or not articles
        or sum(a.passages for a in articles) != len(passages)
    ):
        raise IndexMismatchError(
            f"the index at {path} is inconsistent (its files disagree on sizes); "
            "run `rag index` to rebuild"
        )
    store = FileStore(dense, sentence_dense, bm25, sentence_bm25, starts, path.name)
    vectors = (passage_vectors, sentence_vectors, context_vectors)
    return assemble(manifest, passages, articles, store, *vectors, path)


def assemble(
    manifest: dict,
    passages: tuple[Passage, ...],
    articles: tuple[ArticleInfo, ...],
    store: Store,
    passage_vectors: np.ndarray,
    sentence_vectors: np.ndarray,
    context_vectors: np.ndarray,
    path: Path,
) -> Index:
    """An index from its records, vectors and store, with the lexical tables answering reads."""
    starts = np.cumsum([0, *(len(p.sentences) for p in passages)])
    sentence_tokens = tuple(frozenset(tokenize(t)) for p in passages for t in p.sentence_texts())
    heading_tokens = tuple(
        frozenset(tokenize(f"{p.article_title} {p.section_path}")) for p in passages
    )
    document_frequency: dict[str, int] = {}
    for p in passages:
        for token in set(tokenize(p.indexed_text)):
            document_frequency[token] = document_frequency.get(token, 0) + 1
    idf = {t: math.log(1 + len(passages) / df) for t, df in document_frequency.items()}
    words = vocabulary([p.indexed_text for p in passages])
    english_stems()  # loaded once per process, before the first question needs it
    return Index(
        manifest,
        passages,
        articles,
        store,
        passage_vectors,
        sentence_vectors,
        context_vectors,
        starts,
        sentence_tokens,
        heading_tokens,
        idf,
        path,
        words,
        tuple(sorted(words)),
        proper_words([t for p in passages for t in p.sentence_texts()]),
        tuple(
            heading_tokens[i].union(*sentence_tokens[starts[i] : starts[i + 1]])
            for i in range(len(passages))
        ),
    )
