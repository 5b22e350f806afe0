"""Soak: a real `rag serve` over a copy of the corpus under good and hostile traffic at once.

Mixed answer requests and hostile ones (malformed, oversized, wrong types and
content types, odd paths), two `rag add` runs started 40 ms apart while it
serves, and stalled connections (headers and a few body bytes, then nothing).
Prints requests and failures by kind, the server's RSS and open file
descriptors over time, and checks at the end that the index is whole and holds
both added articles. All traffic goes to 127.0.0.1; it is bounded in time and
in requests.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from benchmarks.common import (
    ROOT,
    dev_questions,
    percentiles,
    stop_server,
    table,
    tree_usage,
    write_results,
)
from benchmarks.load import free_port

MAX_REQUESTS = 200_000  # a hard bound, whatever the duration
FALLBACK_QUESTIONS = [
    "What does an AI architect earn in San Francisco?",
    "Which skills does an MLOps engineer need?",
    "How long does it take to become a machine learning engineer?",
    "What is prompt engineering?",
]

ADDED = {
    "soak-alpha.md": (
        "---\ntitle: Soak alpha careers\nurl: https://soak.example/soak-alpha/\n---\n\n"
        "## Pay\n\nSoak alpha engineers in Tallinn earn about 61,000 euros a year.\n"
    ),
    "soak-beta.md": (
        "---\ntitle: Soak beta careers\nurl: https://soak.example/soak-beta/\n---\n\n"
        "## Pay\n\nSoak beta analysts in Riga earn about 43,000 euros a year.\n"
    ),
}


def _hostile_requests() -> list[tuple[str, str, dict]]:
    """(method, path, httpx keyword arguments) of requests a server must refuse with a 4xx."""
    json_type = {"content-type": "application/json"}
    return [
        ("POST", "/api/answer", {"content": b"{not json", "headers": json_type}),
        ("POST", "/api/answer", {"content": b'{"question": "pay"}', "headers": {}}),
        ("POST", "/api/answer", {"content": b"x" * 100_000, "headers": json_type}),
        ("POST", "/api/answer", {"json": {"question": ""}}),
        ("POST", "/api/answer", {"json": {"question": "pay " * 1_000}}),
        ("POST", "/api/answer", {"json": {"question": 42}}),
        ("POST", "/api/answer", {"json": {"question": "pay", "top_k": 10_000}}),
        ("POST", "/api/answer", {"json": {"question": "pay", "surprise": True}}),
        ("POST", "/api/answer", {"json": [[[[[[[[[[[["deep"]]]]]]]]]]]]}),
        ("POST", "/api/answer", {"json": {"question": "pay", "published_after": "yesterday"}}),
        ("POST", "/api/feedback", {"json": {"question": "q", "passage_ids": ["nope"]}}),
        ("GET", "/api/answer", {}),
        ("GET", "/static/../../etc/passwd", {}),
        ("GET", "/api/nothing-here", {}),
        ("DELETE", "/api/articles", {}),
    ]


@dataclass
class Tally:
    """Counts shared by the traffic threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter = field(default_factory=Counter)  # by kind of traffic
    statuses: Counter = field(default_factory=Counter)  # "kind status"
    failures: Counter = field(default_factory=Counter)  # by kind of failure
    latencies: list[float] = field(default_factory=list)  # accepted good answers, ms

    def total(self) -> int:
        return sum(self.requests.values())

    def count(self, kind: str, status: int | None, failure: str | None, ms: float) -> None:
        with self.lock:
            self.requests[kind] += 1
            self.statuses[f"{kind} {status if status is not None else '-'}"] += 1
            if failure:
                self.failures[failure] += 1
            elif kind == "good" and status == 200:
                self.latencies.append(ms)


def _classify(kind: str, response: httpx.Response) -> str | None:
    """The kind of failure a response is, or None when it is what the server should say."""
    status = response.status_code
    deliberate = status in (429, 503) and "retry-after" in response.headers
    if status >= 500 and not deliberate:
        return f"{kind}: {status}"
    if kind == "good" and status != 200 and not deliberate:
        return f"good: {status}"
    if kind == "hostile" and status < 400:
        return f"hostile accepted: {status}"
    return None


def _traffic(url: str, kind: str, stop: threading.Event, tally: Tally, seed: int) -> None:
    chooser = random.Random(seed)
    questions = _questions()
    hostile = _hostile_requests()
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set() and tally.total() < MAX_REQUESTS:
            if kind == "good":
                method, path, options = "POST", "/api/answer", {"json": _good(chooser, questions)}
            elif kind == "health":
                method, path, options = "GET", chooser.choice(["/api/health", "/api/articles"]), {}
            else:
                method, path, options = chooser.choice(hostile)
            started = time.perf_counter()
            try:
                response = client.request(method, path, **options)
                failure, status = _classify(kind, response), response.status_code
            except httpx.TimeoutException:
                failure, status = f"{kind}: timeout", None
            except httpx.TransportError as exc:
                failure, status = f"{kind}: {type(exc).__name__}", None
            tally.count(kind, status, failure, (time.perf_counter() - started) * 1000)
            if kind == "health":
                time.sleep(0.2)


def _questions() -> list[str]:
    try:
        return dev_questions()
    except OSError:
        return FALLBACK_QUESTIONS


def _good(chooser: random.Random, questions: list[str]) -> dict:
    question = chooser.choice(questions)
    if chooser.random() < 0.2:
        return {"question": "and in Europe?", "history": [question]}
    return {"question": question, "top_k": chooser.randint(1, 8)}


def _stall(port: int, sockets: int, stop: threading.Event, result: dict) -> None:
    """Open connections that send headers and a few body bytes, then nothing; count them."""
    head = (
        b"POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4096\r\n\r\n"
    )
    while not stop.is_set():
        opened = []
        for _ in range(sockets):
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                connection.sendall(head + b'{"question": "')
                opened.append(connection)
            except OSError:
                result["refused"] += 1
        result["opened"] += len(opened)
        stop.wait(15)  # hold them, as a slow-loris client would
        for connection in opened:
            connection.settimeout(0.01)
            try:
                connection.recv(1024)  # a reply (408, 400) or the end: the server let go
                closed_by_server = True
            except (TimeoutError, BlockingIOError):
                closed_by_server = False
            except OSError:
                closed_by_server = True
            result["closed_by_server" if closed_by_server else "still_open"] += 1
            connection.close()


def _sample(server: psutil.Process, started: float, stop: threading.Event, samples: list) -> None:
    while not stop.is_set():
        try:
            rss, fds = tree_usage(server)
        except psutil.Error:
            break
        samples.append(
            {"t": round(time.monotonic() - started), "rss_mb": round(rss / 1024**2), "fds": fds}
        )
        stop.wait(5)


def _rag(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rag.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _seed(folder: Path) -> None:
    """Start from the repository's built index, so the first build embeds nothing new."""
    built = ROOT / "index"
    if not built.exists():
        return
    seed = folder / "index.builds" / "build-0-seed"
    shutil.copytree(built.resolve(), seed)
    models = ROOT / "index.builds" / "models"
    if models.exists():
        shutil.copytree(models, folder / "index.builds" / "models")
    (folder / "index").symlink_to(Path("index.builds") / seed.name)


def run(seconds: int = 180, clients: int = 3, stalled: int = 16) -> dict:
    """Soak a server for ``seconds``; returns every figure printed."""
    folder = Path(tempfile.mkdtemp(prefix="rag-soak-"))
    shutil.copytree(ROOT / "corpus", folder / "corpus")
    _seed(folder)
    env = {
        **os.environ,
        "RAG_CORPUS_DIR": str(folder / "corpus"),
        "RAG_INDEX_DIR": str(folder / "index"),
        "RAG_DATA_DIR": str(folder / "data"),
        "RAG_RELOAD_CHECK_SECONDS": "1",
    }
    built = _rag(env, "index", "--quiet")
    if built.wait(timeout=1800) != 0:
        raise RuntimeError(f"rag index failed: {built.stderr.read() if built.stderr else ''}")
    for name, text in ADDED.items():
        (folder / name).write_text(text)

    port = free_port()
    log = (folder / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        articles_before = _wait_healthy(url, server)
        results = _soak(url, port, env, folder, server, seconds, clients, stalled)
        results["articles_before"] = articles_before
        results["integrity"] = _check(url, env, articles_before)
    finally:
        stop_server(server)
        log.close()
    shutil.rmtree(folder, ignore_errors=True)
    print(soak_report(results))
    path = write_results("soak.json", results)
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return results


def _wait_healthy(url: str, server: subprocess.Popen) -> int:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"rag serve exited with {server.returncode}")
        try:
            health = httpx.get(f"{url}/api/health", timeout=5)
            if health.status_code == 200:
                return health.json()["articles"]
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("rag serve did not become healthy within 600 s")


def _soak(
    url: str,
    port: int,
    env: dict[str, str],
    folder: Path,
    server: subprocess.Popen,
    seconds: int,
    clients: int,
    stalled: int,
) -> dict:
    tally, stop, samples = Tally(), threading.Event(), []
    stalls = Counter({"opened": 0, "refused": 0, "closed_by_server": 0, "still_open": 0})
    started = time.monotonic()
    kinds = ["good"] * clients + ["hostile", "hostile", "health"]
    threads = [
        threading.Thread(target=_traffic, args=(url, kind, stop, tally, n), daemon=True)
        for n, kind in enumerate(kinds)
    ]
    threads.append(threading.Thread(target=_stall, args=(port, stalled, stop, stalls), daemon=True))
    threads.append(
        threading.Thread(
            target=_sample, args=(psutil.Process(server.pid), started, stop, samples), daemon=True
        )
    )
    for thread in threads:
        thread.start()
    time.sleep(min(20, seconds / 4))
    adds = []
    names = list(ADDED)
    first = _rag(env, "add", str(folder / names[0]))
    time.sleep(0.04)
    second = _rag(env, "add", str(folder / names[1]))
    for name, process in zip(names, (first, second), strict=True):
        out, err = process.communicate(timeout=1800)
        adds.append(
            {
                "file": name,
                "exit": process.returncode,
                "traceback": "Traceback" in err,
                "said": (out.strip().splitlines() or err.strip().splitlines() or [""])[-1],
            }
        )
    stop.wait(max(0.0, seconds - (time.monotonic() - started)))
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    return {
        "seconds": round(time.monotonic() - started),
        "requests": dict(tally.requests),
        "statuses": dict(sorted(tally.statuses.items())),
        "failures": dict(tally.failures),
        "good_latency_ms": percentiles(tally.latencies),
        "stalled_connections": dict(stalls),
        "adds": adds,
        "samples": samples,
    }


def _check(url: str, env: dict[str, str], articles_before: int) -> dict:
    """The served index holds both added articles, and the index on disk is whole and current."""
    deadline, health = time.monotonic() + 120, {}
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/api/health", timeout=10).json()
        if health.get("articles") == articles_before + len(ADDED):
            break
        time.sleep(1)
    slugs = {a["slug"] for a in httpx.get(f"{url}/api/articles", timeout=10).json()}
    current = _rag(env, "index", "--if-needed", "--quiet")
    out, err = current.communicate(timeout=600)
    return {
        "served_articles": health.get("articles"),
        "health": health.get("status"),
        "both_added_served": {"soak-alpha", "soak-beta"} <= slugs,
        "index_up_to_date": current.returncode == 0 and "is up to date" in out,
        "if_needed_said": (out or err).strip(),
    }


def soak_report(results: dict) -> str:
    """The soak's figures as plain tables."""
    requests = results["requests"]
    lines = [
        f"Soak: {results['seconds']} s, {sum(requests.values())} requests "
        f"({', '.join(f'{k} {v}' for k, v in sorted(requests.items()))})",
        "Statuses: " + ", ".join(f"{k}: {v}" for k, v in results["statuses"].items()),
        "Failures: " + (", ".join(f"{k}: {v}" for k, v in results["failures"].items()) or "none"),
        "Good answers, ms: " + ", ".join(f"{k} {v}" for k, v in results["good_latency_ms"].items()),
        "Stalled connections: "
        + ", ".join(f"{k} {v}" for k, v in results["stalled_connections"].items()),
    ]
    for add in results["adds"]:
        lines.append(
            f"rag add {add['file']}: exit {add['exit']}, traceback {add['traceback']}: "
            f"{add['said']}"
        )
    rows = [[s["t"], s["rss_mb"], s["fds"]] for s in results["samples"]]
    step = max(1, len(rows) // 12)
    lines.append(table("\nServer over time", ["t s", "RSS MB", "open fds"], rows[::step]))
    integrity = results["integrity"]
    lines.append(
        f"\nIndex at the end: health {integrity['health']}, {integrity['served_articles']} "
        f"articles served (from {results['articles_before']}), both added served "
        f"{integrity['both_added_served']}, on disk whole and current "
        f"{integrity['index_up_to_date']}"
    )
    return "\n".join(lines)
