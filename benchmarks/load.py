"""HTTP load: a real `rag serve` on a free port, locust at each client count, worker memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from benchmarks.common import (
    BIN,
    DEV_QUESTIONS,
    RESULTS,
    ROOT,
    dev_questions,
    percentiles,
    stop_server,
    table,
    worker_memory,
)

CLIENTS = (1, 8, 32, 64)
DELIBERATE = (429, 503)  # refusals the server means, when they carry Retry-After


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(workers: int, log: Path) -> Iterator[tuple[str, psutil.Process]]:
    """`rag serve` over the repository's index; yields its URL and process once healthy."""
    port = free_port()
    env = {**os.environ, "RAG_INDEX_DIR": str(ROOT / "index")}
    command = [str(BIN / "rag"), "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server, workers, log)
        yield url, psutil.Process(server.pid)
    finally:
        stop_server(server)


def _wait_healthy(url: str, server: subprocess.Popen, workers: int, log: Path) -> None:
    """Until every worker has started (each loads the model and index itself), then warm up."""
    deadline = time.monotonic() + 300
    while log.read_text().count("Application startup complete") < workers:
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"rag serve did not start (exit code {server.poll()}); see {log}")
        time.sleep(0.5)
    with httpx.Client(base_url=url, timeout=30) as client:
        if client.get("/api/health").status_code != 200:
            raise RuntimeError(f"rag serve has no usable index; see {log}")
        for question in dev_questions()[:20]:  # warm caches and allocators
            client.post("/api/answer", json={"question": question}, headers={"connection": "close"})


def run_locust(
    url: str, clients: int, seconds: int, prefix: Path, hosts: tuple[str, ...] = ()
) -> dict:
    """One headless locust run; the accepted answers' latency and every refusal, counted.

    With ``hosts``, requests go to each of them in turn (round-robin) instead of to ``url``,
    and the result counts the answers each host gave."""
    records_path = prefix.with_suffix(".records.json")
    env = {
        **os.environ,
        "BENCH_QUESTIONS": str(DEV_QUESTIONS),
        "BENCH_RECORDS": str(records_path),
        "BENCH_HOSTS": ",".join(hosts),
    }
    command = [
        str(BIN / "locust"),
        "-f",
        str(ROOT / "benchmarks" / "locustfile.py"),
        "--headless",
        "--only-summary",
        "--host",
        url,
        "-u",
        str(clients),
        "-r",
        str(clients),
        "-t",
        f"{seconds}s",
        "--csv",
        str(prefix),
        "--loglevel",
        "ERROR",
    ]
    subprocess.run(
        command, env=env, cwd=ROOT, check=False, capture_output=True, timeout=seconds * 4
    )
    records = json.loads(records_path.read_text())
    records_path.unlink()
    accepted = [ms for _, ms, status, _, _ in records if status == 200]
    deliberate = [s for _, _, s, retry, _ in records if s in DELIBERATE and retry]
    other: dict[str, int] = {}
    for _, _, status, retry, _ in records:
        if status != 200 and not (status in DELIBERATE and retry):
            other[str(status)] = other.get(str(status), 0) + 1
    span = max(s + ms / 1000 for s, ms, *_ in records) - min(s for s, *_ in records)
    by_host = {host: 0 for host in hosts}
    for _, _, status, _, host in records:
        if host in by_host and status == 200:
            by_host[host] += 1
    return {
        "clients": clients,
        "seconds": round(span, 1),
        "requests": len(records),
        "answers_per_s": round(len(accepted) / span, 1),
        "accepted_ms": percentiles(accepted),
        "refused_503": deliberate.count(503),
        "refused_429": deliberate.count(429),
        "other_errors": other,
        **({"answers_by_host": by_host} if hosts else {}),
    }


def run(workers: int = 2, seconds: int = 20, clients: tuple[int, ...] = CLIENTS) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "serve.log"
    with tempfile.TemporaryDirectory() as scratch, served(workers, log) as (url, server):
        levels = []
        for n in clients:
            levels.append(run_locust(url, n, seconds, Path(scratch) / f"locust-{n}"))
            print(levels[-1], flush=True)
            time.sleep(2)  # let the queue drain between levels
        memory = worker_memory(server)
    return {
        "workers": workers,
        "seconds_per_level": seconds,
        "levels": levels,
        "memory": memory,
    }


def load_table(results: dict) -> str:
    return table(
        f"HTTP load: rag serve --workers {results['workers']}, locust closed loop, "
        f"{results['seconds_per_level']} s a level (latency of accepted answers)",
        ["clients", "answers/s", "p50 ms", "p95 ms", "p99 ms", "503", "429", "other errors"],
        [
            [
                r["clients"],
                r["answers_per_s"],
                r["accepted_ms"]["p50"],
                r["accepted_ms"]["p95"],
                r["accepted_ms"]["p99"],
                r["refused_503"],
                r["refused_429"],
                sum(r["other_errors"].values()) or 0,
            ]
            for r in results["levels"]
        ],
    )
