"""Index: build, persist (atomically) and load the FAISS, BM25 and sentence stores of the corpus."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import bm25s
import faiss
import numpy as np

from rag.chunking import Passage, chunk_articles
from rag.embedding import Embedder, text_key
from rag.errors import IndexMismatchError, IndexMissingError, RagError
from rag.ingest import Article, CorpusFile, Shape, corpus_files, load_corpus
from rag.settings import Settings
from rag.tokens import english_stems, proper_words, tokenize, vocabulary

# 2: sentences get their own FAISS index; 3: "LLMs" is tokenised "llm"; 4: table rows and
# list items are whole units with their shapes (cells, introduction)
FORMAT_VERSION = 4
MANIFEST = "manifest.json"
BUILDS_SUFFIX = ".builds"  # sibling folder holding every build; `index` links to the current one
_KEEP_BUILDS = 3


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
    dense: faiss.Index
    passage_vectors: np.ndarray  # the unit vectors in the dense index, row per passage
    bm25: bm25s.BM25
    sentence_bm25: bm25s.BM25
    sentence_vectors: np.ndarray  # one row per sentence of every passage, in order
    sentence_dense: faiss.Index  # the same rows, searchable
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


def builds_dir(index_dir: Path) -> Path:
    return index_dir.with_name(index_dir.name + BUILDS_SUFFIX)


def build_index(
    settings: Settings, embedder: Embedder | None = None, *, progress: bool = False
) -> BuildSummary:
    """Read the corpus, embed it and swap the new index in atomically.

    The build is written to a fresh folder under ``<index>.builds/``; only when
    every file is on disk does the ``index`` symlink move to it (``os.replace``
    of a link is atomic), so a failed or interrupted build never touches the
    index in use.
    """
    started = time.perf_counter()
    articles, files = load_corpus(settings.corpus_dir)
    passages = chunk_articles(articles, settings)
    sentences = [s for p in passages for s in p.sentence_texts()]
    texts = [p.indexed_text for p in passages] + sentences
    keys = [text_key(settings.model, t) for t in texts]
    cache = _load_cache(settings.index_dir)
    missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in cache}
    if missing:  # the model is loaded only when something is new: warm rebuilds skip it
        embedder = embedder or Embedder(settings.model)
        fresh = embedder.encode(list(missing.values()), progress=progress)
        cache.update(zip(missing, fresh, strict=True))
    vectors = np.stack([cache[k] for k in keys]).astype(np.float32)
    passage_vectors, sentence_vectors = vectors[: len(passages)], vectors[len(passages) :]
    # Keep only what this build uses, so the cache does not grow with every edit.
    cache = {k: cache[k] for k in dict.fromkeys(keys)}

    root = builds_dir(settings.index_dir)
    root.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="build-", dir=root))
    try:
        _write(
            build,
            settings,
            int(vectors.shape[1]),
            articles,
            files,
            passages,
            passage_vectors,
            sentence_vectors,
            cache,
        )
        _swap_in(settings.index_dir, build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    _prune(root, keep=build)
    return BuildSummary(
        articles=len(articles),
        sections=sum(len(a.sections) for a in articles),
        passages=len(passages),
        sentences=len(sentences),
        embedded=len(missing),
        seconds=time.perf_counter() - started,
        path=build,
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
    cache: dict[str, np.ndarray],
) -> None:
    # Each index picks its kind by its own size: there are ~6 sentences a passage, so the
    # sentence index needs HNSW long before the passage index does.
    kinds = {
        name: settings.index_kind
        if settings.index_kind != "auto"
        else ("hnsw" if len(vectors) >= settings.hnsw_from_vectors else "flat")
        for name, vectors in (("passages", passage_vectors), ("sentences", sentence_vectors))
    }
    faiss.write_index(dense_index(passage_vectors, kinds["passages"]), str(build / "dense.faiss"))
    faiss.write_index(
        dense_index(sentence_vectors, kinds["sentences"]), str(build / "sentences.faiss")
    )
    np.save(build / "sentences.npy", sentence_vectors.astype(np.float16))
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
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": settings.model,
        "dimension": dimension,
        "index_kind": kinds,
        "chunking": _chunking(settings),
        "corpus_files": [asdict(f) for f in files],
        "counts": {
            "articles": len(articles),
            "sections": sum(len(a.sections) for a in articles),
            "passages": len(passages),
            "sentences": len(sentence_vectors),
        },
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    # The manifest is written last: a folder without one is never a usable index.
    (build / MANIFEST).write_text(json.dumps(manifest, indent=1))
    os.chmod(build, 0o755)


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
    """Remove old builds (a running server has its index in memory) and leftovers of failed ones."""
    builds = sorted(
        (p for p in root.glob("build-*") if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    complete = [p for p in builds if (p / MANIFEST).exists()]
    for old in [p for p in builds if p not in complete] + complete[:-_KEEP_BUILDS]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


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
        manifest = read_manifest(settings.index_dir)
        files = [CorpusFile.of(p, p.read_bytes()) for p in corpus_files(settings.corpus_dir)]
    except (RagError, OSError):
        return False
    return (
        manifest.get("model") == settings.model
        and manifest.get("corpus_files") == [asdict(f) for f in files]
        and manifest.get("chunking") == _chunking(settings)
    )


def _chunking(settings: Settings) -> dict[str, int]:
    """The chunking settings an index records in its manifest and was built with."""
    return {
        "chunk_words": settings.chunk_words,
        "chunk_max_words": settings.chunk_max_words,
        "chunk_overlap_sentences": settings.chunk_overlap_sentences,
    }


def read_manifest(index_dir: Path) -> dict:
    """The manifest of the index at ``index_dir``; raises when missing or unreadable."""
    path = index_dir / MANIFEST
    if not path.exists():
        raise IndexMissingError(f"no index at {index_dir}; run `rag index` to build it")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise IndexMismatchError(
            f"the index manifest {path} is unreadable; run `rag index` to rebuild"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexMismatchError(
            f"the index at {index_dir} has format version "
            f"{manifest.get('format_version') if isinstance(manifest, dict) else '?'}, "
            f"this version reads {FORMAT_VERSION}; run `rag index` to rebuild"
        )
    if not isinstance(manifest.get("counts"), dict) or not isinstance(manifest.get("model"), str):
        raise IndexMismatchError(
            f"the index manifest {path} lacks its counts or model; run `rag index` to rebuild"
        )
    return manifest


def load_index(settings: Settings, embedder: Embedder | None = None) -> Index:
    """Load the index read-only, checking it against the settings and its own manifest."""
    path = settings.index_dir.resolve()
    manifest = read_manifest(path)
    if manifest.get("model") != settings.model:
        raise IndexMismatchError(
            f"the index was built with model {manifest.get('model')!r} but the settings ask for "
            f"{settings.model!r}; run `rag index` to rebuild with this model"
        )
    if embedder is not None and manifest.get("dimension") != embedder.dimension:
        raise IndexMismatchError(
            f"the index holds {manifest.get('dimension')}-dimensional vectors but the model gives "
            f"{embedder.dimension}; run `rag index` to rebuild"
        )
    try:
        dense = faiss.read_index(str(path / "dense.faiss"))
        passage_vectors = np.load(path / "passage_vectors.npy")
        bm25 = bm25s.BM25.load(str(path / "bm25"))
        sentence_bm25 = bm25s.BM25.load(str(path / "bm25_sentences"))
        sentence_vectors = np.load(path / "sentences.npy").astype(np.float32)
        sentence_dense = faiss.read_index(str(path / "sentences.faiss"))
        passages = tuple(
            Passage(
                **{
                    **row,
                    "sentences": tuple(tuple(s) for s in row["sentences"]),
                    "shapes": tuple(Shape.from_dict(s) for s in row.get("shapes", ())),
                }
            )
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
        or sentence_dense.ntotal != starts[-1]
        or passage_vectors.shape != (len(passages), dense.d)
    ):
        raise IndexMismatchError(
            f"the index at {path} is inconsistent (its files disagree on sizes); "
            "run `rag index` to rebuild"
        )
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
        dense,
        passage_vectors,
        bm25,
        sentence_bm25,
        sentence_vectors,
        sentence_dense,
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
