"""Embedding cache: the vectors of texts already embedded, and with a database, a work queue.

Texts are keyed by `rag.embedding.text_key` (model and text). Without ``RAG_DATABASE_URL``
the cache is the previous build's ``embedding_cache.npz`` and the build embeds what is
missing itself. With it, the cache is the table ``embedding`` every machine shares: a
build (the coordinator) puts the texts it needs and nobody has embedded into the table
``embedding_queue``, and any number of ``rag index --worker`` processes, on any machine,
take them in batches with ``SELECT … FOR UPDATE SKIP LOCKED``, embed them and write the
vectors back in the same transaction. A worker that dies mid-batch loses nothing: its
transaction ends with its connection, its rows are unlocked, and another takes them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from rag.embedding import Embedder
from rag.errors import StorageError
from rag.settings import Settings

BATCH = 64  # texts a worker (or the coordinator) takes at once
POLL_SECONDS = 0.5  # how often a waiting coordinator or `--wait` worker looks again
POSTGRES_COMPONENT = "embedding_cache"
_POSTGRES_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE embedding (
        key text PRIMARY KEY,
        model text NOT NULL,
        dimension integer NOT NULL,
        vector bytea NOT NULL,
        embedded_by text NOT NULL,
        embedded_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE embedding_queue (
        key text PRIMARY KEY,
        model text NOT NULL,
        text text NOT NULL,
        queued_at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX embedding_queue_model ON embedding_queue (model, queued_at);
    """,
)

Report = Callable[[str], None]


def cached_embeddings(
    settings: Settings,
    keys: list[str],
    texts: list[str],
    embedder: Embedder | None,
    stored: Callable[[], dict[str, np.ndarray]],
    *,
    heading: str,
    report: Report,
    progress: bool = False,
    embed: bool = True,
) -> tuple[dict[str, np.ndarray], int]:
    """A vector for every key (``keys[i]`` is ``texts[i]``'s), and how many had to be embedded.

    ``stored`` reads the file cache (used without a database). ``report`` hears
    "<heading>; N of M texts to embed" before the model is loaded. With a database,
    ``embed=False`` leaves the embedding to workers and only waits for them.
    """
    if settings.database_url:
        wanted = dict(zip(keys, texts, strict=True))
        with _database_errors():
            return _from_database(
                settings, wanted, embedder, heading=heading, report=report, embed=embed
            )
    cache = stored()
    missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in cache}
    report(f"{heading}; {len(missing)} of {len(texts)} texts to embed")
    if missing:  # the model is loaded only when something is new: warm rebuilds skip it
        embedder = embedder or Embedder(settings.model)
        fresh = embedder.encode(list(missing.values()), progress=progress)
        cache.update(zip(missing, fresh, strict=True))
    return cache, len(missing)


def run_worker(
    settings: Settings,
    *,
    batch: int = BATCH,
    wait: bool = False,
    report: Report,
    embedder: Embedder | None = None,
) -> int:
    """Embed queued texts of ``settings.model`` batch by batch; return how many.

    Stops when no text is left to take, or with ``wait`` keeps looking every
    ``POLL_SECONDS`` until interrupted.
    """
    with _database_errors():
        pool = _pool(settings)
        embedder = embedder or Embedder(settings.model)
        report(f"worker {_worker_name()} ready: embedding queued texts of {settings.model}")
        total = 0
        while True:
            taken, embedded = _embed_batch(pool, settings, lambda: embedder, batch, report)
            total += embedded
            if embedded:
                report(f"embedded {embedded} texts ({total} in all)")
            if taken:
                continue
            if wait:
                time.sleep(POLL_SECONDS)
            else:
                return total


@contextmanager
def _database_errors() -> Iterator[None]:
    """A failure of the database is one line; what was committed stays, the rest is queued."""
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"the embedding cache in the database failed: {reason}") from None


def _from_database(
    settings: Settings,
    wanted: dict[str, str],
    embedder: Embedder | None,
    *,
    heading: str,
    report: Report,
    embed: bool,
) -> tuple[dict[str, np.ndarray], int]:
    pool = _pool(settings)
    cache = _fetch(pool, list(wanted))
    missing = {k: t for k, t in wanted.items() if k not in cache}
    report(f"{heading}; {len(missing)} of {len(wanted)} texts to embed")
    if not missing:
        return cache, 0
    _enqueue(pool, settings.model, missing)
    report(
        f"queued {len(missing)} texts for embedding; "
        + ("embedding here and with any `rag index --worker`" if embed else "waiting for workers")
    )
    loaded: list[Embedder] = [embedder] if embedder else []

    def model() -> Embedder:
        if not loaded:
            loaded.append(Embedder(settings.model))
        return loaded[0]

    pending = set(missing)
    last_word = time.monotonic()
    while pending:
        taken = _embed_batch(pool, settings, model, BATCH, lambda message: None)[0] if embed else 0
        found = _fetch(pool, list(pending))
        cache.update(found)
        pending.difference_update(found)
        if pending and not taken:
            time.sleep(POLL_SECONDS)
            # A text neither embedded nor queued (the queue was cleared) is queued again.
            _enqueue(pool, settings.model, {k: missing[k] for k in pending})
        if time.monotonic() - last_word > 10:
            report(f"{len(missing) - len(pending)} of {len(missing)} texts embedded")
            last_word = time.monotonic()
    return cache, len(missing)


def _embed_batch(
    pool: object, settings: Settings, model: Callable[[], Embedder], size: int, report: Report
) -> tuple[int, int]:
    """Take up to ``size`` queued texts no one else holds, embed them, store them; how many
    were taken off the queue, and how many of those had to be embedded.

    The rows stay locked until the vectors are written and the rows deleted, in one
    transaction: a process killed meanwhile leaves them queued and free to take. A text
    embedded since it was queued is taken off without being embedded again: a coordinator
    that queues its missing texts again can do so while a worker's batch commits (its
    insert does not yet see that batch's vectors, and the queue row it waited on is gone).
    """
    with pool.connection() as connection:  # type: ignore[attr-defined]
        rows = connection.execute(
            "SELECT key, text FROM embedding_queue WHERE model = %s "
            "ORDER BY queued_at, key LIMIT %s FOR UPDATE SKIP LOCKED",
            (settings.model, size),
        ).fetchall()
        if not rows:
            return 0, 0
        keys = [key for key, _ in rows]
        done = {
            key
            for (key,) in connection.execute(
                "SELECT key FROM embedding WHERE key = ANY(%s)", (keys,)
            ).fetchall()
        }
        fresh = [(key, text) for key, text in rows if key not in done]
        if fresh:
            report(f"took {len(fresh)} texts")
            vectors = model().encode([text for _, text in fresh])
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO embedding (key, model, dimension, vector, embedded_by) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
                    [
                        (key, settings.model, len(vector), _to_bytes(vector), _worker_name())
                        for (key, _), vector in zip(fresh, vectors, strict=True)
                    ],
                )
        connection.execute("DELETE FROM embedding_queue WHERE key = ANY(%s)", (keys,))
    return len(rows), len(fresh)


def _enqueue(pool: object, model: str, texts: dict[str, str]) -> None:
    """Queue the texts not embedded yet; a text already queued stays as it is."""
    with pool.connection() as connection, connection.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.executemany(
            "INSERT INTO embedding_queue (key, model, text) "
            "SELECT %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM embedding WHERE key = %s) "
            "ON CONFLICT (key) DO NOTHING",
            [(key, model, text, key) for key, text in texts.items()],
        )


def _fetch(pool: object, keys: list[str]) -> dict[str, np.ndarray]:
    with pool.connection() as connection:  # type: ignore[attr-defined]
        rows = connection.execute(
            "SELECT key, vector FROM embedding WHERE key = ANY(%s)", (keys,)
        ).fetchall()
    return {key: np.frombuffer(vector, dtype="<f4").astype(np.float32) for key, vector in rows}


def _to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pool(settings: Settings) -> object:
    from rag.dbpool import shared_pool

    return shared_pool(settings.database_url, POSTGRES_COMPONENT, _POSTGRES_MIGRATIONS)
