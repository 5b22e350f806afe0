"""PostgreSQL store: the index's generations in tables, searched with pgvector and BM25 weights.

A build computes everything as with files (chunks, embeddings, bm25s) and then
writes one *generation*: its passages with their vectors (``vector(384)``), its
sentences, and the BM25 weight of every (term, passage) and (term, sentence)
pair exactly as bm25s computed them, so a query's BM25 score is a sum over its
terms done by PostgreSQL. Each generation's rows live in tables named after it
(``rag_g<id>_…``): an HNSW index is built for that generation alone, when it is
big enough (``hnsw_from_vectors``), and pruning drops whole tables. The same
transaction that writes a generation makes it active and notifies every replica.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from rag.database import connect, migrate
from rag.errors import IndexMismatchError, IndexMissingError, StorageError
from rag.store import Ranking

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg import Connection
    from psycopg_pool import ConnectionPool

    from rag.embedding import Embedder
    from rag.index import Index
    from rag.settings import Settings

COMPONENT = "index"
CHANNEL = "rag_generation"  # NOTIFY channel: the payload is the new active generation's id
MIGRATIONS = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    """CREATE TABLE rag_generations (
        id bigserial PRIMARY KEY,
        manifest jsonb NOT NULL,
        articles jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        superseded_at timestamptz
    )""",
    """CREATE TABLE rag_active_generation (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        generation bigint NOT NULL REFERENCES rag_generations (id)
    )""",
)
_TABLES = ("passages", "sentences", "passage_terms", "sentence_terms")
_BUILD_LOCK = "SELECT pg_advisory_lock(hashtext('rag_build'))"
_TRY_BUILD_LOCK = "SELECT pg_try_advisory_lock(hashtext('rag_build'))"
_BUILD_UNLOCK = "SELECT pg_advisory_unlock(hashtext('rag_build'))"
# A replica holds a shared lock on the generation it serves; pruning needs the exclusive one.
_PIN = "SELECT pg_advisory_lock_shared(hashtext('rag_generation'), %s::int)"
_UNPIN = "SELECT pg_advisory_unlock_shared(hashtext('rag_generation'), %s::int)"
_TRY_CLAIM = "SELECT pg_try_advisory_lock(hashtext('rag_generation'), %s::int)"
_UNCLAIM = "SELECT pg_advisory_unlock(hashtext('rag_generation'), %s::int)"
_ACTIVE = """
SELECT g.id, g.manifest, g.articles
FROM rag_active_generation a JOIN rag_generations g ON g.id = a.generation
"""


def _table(generation: int, name: str):
    from psycopg import sql

    return sql.Identifier(f"rag_g{int(generation)}_{name}")


def _database_error(error: Exception, doing: str) -> StorageError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return StorageError(f"the database failed while {doing}: {reason}")


def _prepared(connection: Connection) -> Connection:
    """A connection that reads and writes vectors, with HNSW searched as FAISS is here."""
    from pgvector.psycopg import register_vector

    register_vector(connection)
    # FAISS's HNSW looks at max(efSearch, k) candidates; k reaches 200 for sentences.
    # A strict iterative scan keeps filtered searches (allowed passages) complete.
    connection.execute("SET hnsw.ef_search = 200")
    connection.execute("SET hnsw.iterative_scan = strict_order")
    if not connection.autocommit:
        connection.commit()
    return connection


_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()


def pool(url: str) -> ConnectionPool:
    """The process's pool of search connections to ``url``, opened on first use."""
    from psycopg_pool import ConnectionPool

    with _pools_lock:
        if url not in _pools:
            _pools[url] = ConnectionPool(
                url,
                min_size=1,
                max_size=8,
                kwargs={"autocommit": True},
                configure=_prepared,
                timeout=10,
                open=True,
                name="rag-search",
            )
        return _pools[url]


@dataclass(frozen=True)
class PgStore:
    """One generation of the index, searched by PostgreSQL (see `rag.store.Store`)."""

    connections: ConnectionPool
    id: int

    @property
    def generation(self) -> str:
        return str(self.id)

    def _rows(self, query, params: dict) -> list[tuple]:
        import psycopg

        try:
            with self.connections.connection() as connection:
                return connection.execute(query, params).fetchall()
        except (psycopg.Error, OSError) as error:
            raise _database_error(error, "searching the index") from None
        except Exception as error:  # the pool's own timeout when the database is unreachable
            if type(error).__name__ == "PoolTimeout":
                raise _database_error(error, "searching the index") from None
            raise

    def nearest_passages(
        self, vector: np.ndarray, depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        rows = self._rows(*self._nearest("passages", "position", vector, depth, allowed))
        return {position: -distance for position, distance in rows}

    def nearest_sentence_passages(
        self, vector: np.ndarray, depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        rows = self._rows(*self._nearest("sentences", "passage", vector, depth * 4, allowed))
        ranking: Ranking = {}
        for passage, distance in rows:
            ranking.setdefault(passage, -distance)
        return dict(list(ranking.items())[:depth])

    def _nearest(
        self, table: str, passage: str, vector: np.ndarray, depth: int, allowed: np.ndarray | None
    ):
        from psycopg import sql

        query = sql.SQL(
            "SELECT {passage}, embedding <#> %(vector)s AS distance FROM {table} {where} "
            "ORDER BY distance LIMIT %(depth)s"
        ).format(
            passage=sql.Identifier(passage),
            table=_table(self.id, table),
            where=_where(passage, allowed),
        )
        params = {"vector": np.asarray(vector, dtype=np.float32), "depth": depth}
        return query, params | _allowed(allowed)

    def lexical_passages(
        self, tokens: list[str], depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        from psycopg import sql

        query = sql.SQL(
            "SELECT t.position, sum(t.weight::float8 * q.n) AS score FROM {postings} "
            "GROUP BY t.position ORDER BY score DESC, t.position LIMIT %(depth)s"
        ).format(postings=_postings(self.id, "passage_terms", "t.position", allowed))
        rows = self._rows(query, _terms(tokens) | {"depth": depth} | _allowed(allowed))
        return {position: score for position, score in rows if score > 0}

    def lexical_sentence_passages(
        self, tokens: list[str], depth: int, allowed: np.ndarray | None
    ) -> Ranking:
        from psycopg import sql

        query = sql.SQL(
            "SELECT passage, max(score) AS best FROM ("
            " SELECT t.sentence, t.passage, sum(t.weight::float8 * q.n) AS score"
            " FROM {postings} GROUP BY t.sentence, t.passage"
            ") s GROUP BY passage ORDER BY best DESC, passage LIMIT %(depth)s"
        ).format(postings=_postings(self.id, "sentence_terms", "t.passage", allowed))
        rows = self._rows(query, _terms(tokens) | {"depth": depth} | _allowed(allowed))
        return {passage: score for passage, score in rows if score > 0}


def _postings(generation: int, name: str, column: str, allowed: np.ndarray | None):
    """The query terms' rows of a generation's (term, …, weight) table ``t``, with each
    term's count ``q.n``, within ``allowed`` (by ``column``)."""
    from psycopg import sql

    return sql.SQL(
        "{table} t JOIN unnest(%(terms)s::text[], %(counts)s::float8[]) AS q(term, n) "
        "ON t.term = q.term {where}"
    ).format(table=_table(generation, name), where=_where(column, allowed))


def _terms(tokens: list[str]) -> dict[str, list]:
    """A query's distinct terms and how often each is asked (bm25s adds a repeated one again)."""
    counts = Counter(tokens)
    return {"terms": list(counts), "counts": [float(n) for n in counts.values()]}


def _where(column: str, allowed: np.ndarray | None):
    from psycopg import sql

    if allowed is None:
        return sql.SQL("")
    return sql.SQL("WHERE {} = ANY(%(allowed)s::int4[])").format(sql.Identifier(*column.split(".")))


def _allowed(allowed: np.ndarray | None) -> dict[str, list[int]]:
    return {} if allowed is None else {"allowed": np.flatnonzero(allowed).tolist()}


@contextmanager
def build_lock(settings: Settings, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """The database's advisory lock over building: builds on any machine take turns."""
    import psycopg

    if getattr(_holder, "connection", None) is not None:  # re-entrant within a thread
        yield
        return
    connection = connect(settings.database_url, autocommit=True)
    try:
        if not connection.execute(_TRY_BUILD_LOCK).fetchone()[0]:
            if waiting is not None:
                waiting("another build (in the database) is running; waiting for it to finish")
            connection.execute(_BUILD_LOCK)
        _holder.connection = connection
        yield
    except psycopg.Error as error:
        raise _database_error(error, "building the index") from None
    finally:
        _holder.connection = None
        with suppress(Exception):
            connection.execute(_BUILD_UNLOCK)
        connection.close()


_holder = threading.local()  # the connection holding the build lock in this thread, if any


class GenerationWriter:
    """One transaction that writes a generation and, on `activate`, makes it the active one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connection = connect(settings.database_url)
        self.id: int | None = None

    def __enter__(self) -> GenerationWriter:
        try:
            migrate(self.connection, COMPONENT, MIGRATIONS)
            _prepared(self.connection)
        except Exception:
            self.connection.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with suppress(Exception):
            self.connection.rollback()  # nothing, once activated
        self.connection.close()

    def write(self, index: Index) -> int:
        """Write every row of ``index`` (a verified file build) as a new, inactive generation."""
        import psycopg
        from psycopg.types.json import Jsonb

        try:
            return self._write(index, Jsonb, psycopg)
        except psycopg.Error as error:
            raise _database_error(error, "writing the index") from None

    def _write(self, index: Index, Jsonb, psycopg) -> int:
        from psycopg import sql

        connection = self.connection
        connection.execute("SET LOCAL maintenance_work_mem = '256MB'")
        articles = [asdict(a) for a in index.articles]
        (generation,) = connection.execute(
            "INSERT INTO rag_generations (manifest, articles) VALUES (%s, %s) RETURNING id",
            (Jsonb(index.manifest), Jsonb(articles)),
        ).fetchone()
        dimension = int(index.manifest["dimension"])
        table = {name: _table(generation, name) for name in _TABLES}
        connection.execute(
            sql.SQL(
                "CREATE TABLE {} (position int PRIMARY KEY, embedding vector({}) NOT NULL, "
                "record jsonb NOT NULL)"
            ).format(table["passages"], sql.Literal(dimension))
        )
        connection.execute(
            sql.SQL(
                "CREATE TABLE {} (sentence int PRIMARY KEY, passage int NOT NULL, "
                "embedding vector({}) NOT NULL, context vector({}) NOT NULL)"
            ).format(table["sentences"], sql.Literal(dimension), sql.Literal(dimension))
        )
        connection.execute(
            sql.SQL(
                "CREATE TABLE {} (term text NOT NULL, position int NOT NULL, weight real)"
            ).format(table["passage_terms"])
        )
        connection.execute(
            sql.SQL(
                "CREATE TABLE {} (term text NOT NULL, sentence int NOT NULL, "
                "passage int NOT NULL, weight real)"
            ).format(table["sentence_terms"])
        )
        store = index.store
        with connection.cursor() as cursor:
            copy = sql.SQL("COPY {} (position, embedding, record) FROM STDIN WITH (FORMAT BINARY)")
            with cursor.copy(copy.format(table["passages"])) as rows:
                rows.set_types(["int4", "vector", "jsonb"])
                for position, passage in enumerate(index.passages):
                    rows.write_row(
                        (position, index.passage_vectors[position], Jsonb(asdict(passage)))
                    )
            # The sentence vectors FAISS searches are full float32 (the answer step's copy is
            # rounded to float16): take them from the FAISS index so both stores rank alike.
            sentence_vectors = store.sentence_dense.reconstruct_n(0, store.sentence_dense.ntotal)
            passage_of_sentence = np.repeat(
                np.arange(len(index.passages)), np.diff(index.sentence_start)
            )
            copy = sql.SQL(
                "COPY {} (sentence, passage, embedding, context) FROM STDIN WITH (FORMAT BINARY)"
            )
            with cursor.copy(copy.format(table["sentences"])) as rows:
                rows.set_types(["int4", "int4", "vector", "vector"])
                for row, vector in enumerate(sentence_vectors):
                    context = index.context_vectors[row]
                    rows.write_row((row, int(passage_of_sentence[row]), vector, context))
            with cursor.copy(
                sql.SQL("COPY {} (term, position, weight) FROM STDIN").format(
                    table["passage_terms"]
                )
            ) as rows:
                for term, position, weight in _weights(store.bm25):
                    rows.write_row((term, position, weight))
            with cursor.copy(
                sql.SQL("COPY {} (term, sentence, passage, weight) FROM STDIN").format(
                    table["sentence_terms"]
                )
            ) as rows:
                for term, row, weight in _weights(store.sentence_bm25):
                    rows.write_row((term, row, int(passage_of_sentence[row]), weight))
        connection.execute(sql.SQL("CREATE INDEX ON {} (term)").format(table["passage_terms"]))
        connection.execute(sql.SQL("CREATE INDEX ON {} (term)").format(table["sentence_terms"]))
        kinds = index.manifest["index_kind"]
        for name, kind in (("passages", kinds["passages"]), ("sentences", kinds["sentences"])):
            if kind == "hnsw":  # as FAISS here: M 32, efConstruction 80
                connection.execute(
                    sql.SQL(
                        "CREATE INDEX ON {} USING hnsw (embedding vector_ip_ops) "
                        "WITH (m = 32, ef_construction = 80)"
                    ).format(table[name])
                )
        for name in _TABLES:
            connection.execute(sql.SQL("ANALYZE {}").format(table[name]))
        self.id = int(generation)
        return self.id

    def activate(self) -> None:
        """Make the written generation the active one and tell the replicas: one commit."""
        import psycopg

        if self.id is None:
            raise StorageError("no generation was written")
        try:
            self.connection.execute(
                "UPDATE rag_generations SET superseded_at = now() "
                "WHERE id = (SELECT generation FROM rag_active_generation)"
            )
            self.connection.execute(
                "INSERT INTO rag_active_generation (one, generation) VALUES (true, %s) "
                "ON CONFLICT (one) DO UPDATE SET generation = EXCLUDED.generation",
                (self.id,),
            )
            self.connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(self.id)))
            self.connection.commit()
        except psycopg.Error as error:
            raise _database_error(error, "activating the new index") from None


def _weights(bm25) -> Iterator[tuple[str, int, float]]:
    """Every (term, document, BM25 weight) bm25s computed, from its term-major sparse matrix."""
    scores = bm25.scores
    data, indices, indptr = scores["data"], scores["indices"], scores["indptr"]
    for term, term_id in bm25.vocab_dict.items():
        if term_id + 1 >= len(indptr):
            continue  # bm25s's placeholder for the empty token: no document has it
        start, end = int(indptr[term_id]), int(indptr[term_id + 1])
        for document, weight in zip(
            indices[start:end].tolist(), data[start:end].tolist(), strict=True
        ):
            yield term, document, weight


def active_manifest(settings: Settings) -> dict | None:
    """The manifest of the active generation, or None when there is none yet."""
    with connect(settings.database_url) as connection:
        migrate(connection, COMPONENT, MIGRATIONS)
        row = connection.execute(_ACTIVE).fetchone()
    return None if row is None else row[1]


def load_active(settings: Settings, embedder: Embedder | None = None) -> Index:
    """The active generation as an index searched by PostgreSQL, its records in memory."""
    import psycopg

    from rag.index import ArticleInfo, assemble, check_manifest, passage_of

    try:
        with connect(settings.database_url) as connection:
            migrate(connection, COMPONENT, MIGRATIONS)
            _prepared(connection)
            with connection.transaction():  # one snapshot; the tables are locked until done
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                row = connection.execute(_ACTIVE).fetchone()
                if row is None:
                    raise IndexMissingError(
                        "no index in the database (RAG_DATABASE_URL); run `rag index` to build it"
                    )
                generation, manifest, articles = row
                check_manifest(settings, manifest, embedder)
                from psycopg import sql

                # Binary results: vectors arrive as float32 bytes instead of text to parse
                # (half the load's time at 5,000 vectors), so a replica swaps sooner.
                cursor = connection.cursor(binary=True)
                records = cursor.execute(
                    sql.SQL("SELECT record, embedding FROM {} ORDER BY position").format(
                        _table(generation, "passages")
                    )
                ).fetchall()
                sentences = cursor.execute(
                    sql.SQL("SELECT embedding, context FROM {} ORDER BY sentence").format(
                        _table(generation, "sentences")
                    )
                ).fetchall()
    except psycopg.Error as error:
        raise _database_error(error, "loading the index") from None
    passages = tuple(passage_of(record) for record, _ in records)
    dimension = int(manifest["dimension"])
    passage_vectors = np.array([_array(v) for _, v in records], dtype=np.float32).reshape(
        -1, dimension
    )
    # As the file store keeps them for the answer step: rounded to float16.
    sentence_vectors, context_vectors = (
        np.array([_array(row[n]) for row in sentences], dtype=np.float32)
        .reshape(-1, dimension)
        .astype(np.float16)
        .astype(np.float32)
        for n in (0, 1)
    )
    starts = np.cumsum([0, *(len(p.sentences) for p in passages)])
    if len(sentence_vectors) != starts[-1] or manifest["counts"]["passages"] != len(passages):
        raise IndexMismatchError(
            f"generation {generation} in the database is inconsistent; run `rag index` to rebuild"
        )
    store = PgStore(pool(settings.database_url), int(generation))
    return assemble(
        manifest,
        passages,
        tuple(ArticleInfo(**a) for a in articles),
        store,
        passage_vectors,
        sentence_vectors,
        context_vectors,
        settings.index_dir,
    )


def _array(vector: object) -> np.ndarray:
    """A vector column's value as numpy (pgvector's binary loader gives a ``Vector``)."""
    return vector.to_numpy() if hasattr(vector, "to_numpy") else np.asarray(vector)


def prune(settings: Settings) -> list[int]:
    """Drop generations superseded more than ``generation_grace_seconds`` ago that no replica
    serves; returns their ids. Skipped while another build holds the build lock."""
    import psycopg

    held = getattr(_holder, "connection", None)
    try:
        if held is not None:
            return _prune(held, settings.generation_grace_seconds)
        with connect(settings.database_url, autocommit=True) as connection:
            if not connection.execute(_TRY_BUILD_LOCK).fetchone()[0]:
                return []
            try:
                return _prune(connection, settings.generation_grace_seconds)
            finally:
                connection.execute(_BUILD_UNLOCK)
    except psycopg.Error as error:
        raise _database_error(error, "pruning old generations") from None


def _prune(connection: Connection, grace: float) -> list[int]:
    from psycopg import sql

    migrate(connection, COMPONENT, MIGRATIONS)
    old = connection.execute(
        "SELECT id FROM rag_generations "
        "WHERE id IS DISTINCT FROM (SELECT generation FROM rag_active_generation) "
        "AND coalesce(superseded_at, created_at) < now() - make_interval(secs => %s) "
        "ORDER BY id",
        (grace,),
    ).fetchall()
    dropped = []
    for (generation,) in old:
        if not connection.execute(_TRY_CLAIM, (generation,)).fetchone()[0]:
            continue  # a replica still serves it
        try:
            with connection.transaction():
                for name in _TABLES:
                    connection.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(_table(generation, name))
                    )
                connection.execute("DELETE FROM rag_generations WHERE id = %s", (generation,))
            dropped.append(int(generation))
        finally:
            connection.execute(_UNCLAIM, (generation,))
    return dropped


class Listener:
    """A replica's own connection to the database: it hears of new generations (LISTEN),
    tells which one is active, and pins the one served so pruning leaves it alone."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: Connection | None = None
        self.pinned: int | None = None

    def _open(self) -> Connection:
        if self._connection is None or self._connection.closed:
            connection = connect(self.settings.database_url, autocommit=True)
            migrate(connection, COMPONENT, MIGRATIONS)
            connection.execute(f"LISTEN {CHANNEL}")
            if self.pinned is not None:
                connection.execute(_PIN, (self.pinned,))
            self._connection = connection
        return self._connection

    def _run(self, step: Callable[[Connection], object], doing: str) -> object:
        import psycopg

        try:
            return step(self._open())
        except psycopg.Error as error:
            self.close()
            raise _database_error(error, doing) from None

    def active(self) -> int | None:
        """The active generation's id (None: nothing built yet)."""
        row = self._run(
            lambda c: c.execute("SELECT generation FROM rag_active_generation").fetchone(),
            "looking for a new index",
        )
        return None if row is None else int(row[0])  # type: ignore[index]

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a new generation's notice; returns whether one came."""
        return bool(
            self._run(
                lambda c: list(c.notifies(timeout=seconds, stop_after=1)),
                "waiting for a new index",
            )
        )

    def pin(self, generation: int) -> None:
        """Hold the generation served (and let go of the one before)."""

        def step(connection: Connection) -> None:
            if self.pinned == generation:
                return
            connection.execute(_PIN, (generation,))
            if self.pinned is not None:
                connection.execute(_UNPIN, (self.pinned,))
            self.pinned = generation

        self._run(step, "holding the index served")

    def close(self) -> None:
        if self._connection is not None:
            with suppress(Exception):
                self._connection.close()
        self._connection = None


def generation_count(settings: Settings) -> int:
    """How many generations the database holds (the active one and those in their grace)."""
    with connect(settings.database_url) as connection:
        migrate(connection, COMPONENT, MIGRATIONS)
        return int(connection.execute("SELECT count(*) FROM rag_generations").fetchone()[0])
