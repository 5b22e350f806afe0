"""One serving worker: cold start to the first answer, and its memory after 50 answers.

Each run spawns `rag serve` (one worker, over the repository's ``index/`` or
``RAG_INDEX_DIR``) as a real process on a free port and POSTs a question to
``/api/answer`` until one comes back 200: *cold start* is the time from the
spawn to that answer (interpreter start, imports, index and question encoder
loaded, the first answer computed). Then 50 dev questions are answered one
after the other and the worker's resident memory is read (psutil). The server
is stopped and the next run starts from nothing; medians of the runs are
reported. The run also records whether the worker holds torch (from
``/proc/<pid>/maps``: a loaded ``libtorch`` shows there).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
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
from benchmarks.load import free_port

ANSWERS = 50


def run(runs: int = 3, answers: int = ANSWERS) -> dict:
    """``runs`` cold starts of one worker; medians of cold start and RSS."""
    questions = dev_questions()
    samples = [_one_run(questions, answers) for _ in range(runs)]
    return {
        "runs": samples,
        "answers": answers,
        "cold_start_s": round(statistics.median(s["cold_start_s"] for s in samples), 2),
        "rss_mb": round(statistics.median(s["rss_mb"] for s in samples)),
        "torch_loaded": any(s["torch_loaded"] for s in samples),
    }


def _one_run(questions: list[str], answers: int) -> dict:
    port = free_port()
    env = {**os.environ, "RAG_INDEX_DIR": os.environ.get("RAG_INDEX_DIR", str(ROOT / "index"))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "worker.log"
    command = [sys.executable, "-m", "rag.cli", "serve", "--port", str(port), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as output:
        started = time.perf_counter()
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            cold = _first_answer(client, server, questions[0], started, log)
            for question in (questions * (answers // len(questions) + 1))[:answers]:
                response = client.post("/api/answer", json={"question": question})
                if response.status_code != 200:
                    raise RuntimeError(f"an answer failed ({response.status_code}); see {log}")
        rss = sum(m["rss_mb"] for m in worker_memory(psutil.Process(server.pid)))
        maps = Path(f"/proc/{server.pid}/maps").read_text()
    finally:
        stop_server(server)
    sample = {
        "cold_start_s": round(cold, 2),
        "rss_mb": rss,
        "torch_loaded": "libtorch" in maps,
    }
    print(sample, flush=True)
    return sample


def _first_answer(
    client: httpx.Client, server: subprocess.Popen, question: str, started: float, log: Path
) -> float:
    """Seconds from the spawn to the first 200 answer (refused connections and 503s retried)."""
    deadline = started + 300
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"rag serve exited ({server.returncode}); see {log}")
        try:
            response = client.post("/api/answer", json={"question": question})
        except httpx.TransportError:
            time.sleep(0.02)
            continue
        if response.status_code == 200:
            return time.perf_counter() - started
        reason = response.json().get("detail", "") if response.status_code == 503 else ""
        if reason and reason != "the index is loading":  # it will not get better by waiting
            raise RuntimeError(f"rag serve has no usable index: {reason}")
        time.sleep(0.02)
    raise RuntimeError(f"no answer within 300 s; see {log}")


def worker_table(results: dict) -> str:
    rows = [
        [f"run {n}", s["cold_start_s"], s["rss_mb"], "yes" if s["torch_loaded"] else "no"]
        for n, s in enumerate(results["runs"], 1)
    ]
    rows.append(
        [
            "median",
            results["cold_start_s"],
            results["rss_mb"],
            "yes" if results["torch_loaded"] else "no",
        ]
    )
    return table(
        f"One worker: cold start to first answer, RSS after {results['answers']} answers",
        ["run", "cold start s", "RSS MB", "torch"],
        rows,
    )


def main(runs: int = 3) -> None:
    results = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    results["worker"] = run(runs)
    path = write_results("worker.json", results)
    print(worker_table(results["worker"]))
    print(f"\nwritten to {path.relative_to(ROOT)}")
