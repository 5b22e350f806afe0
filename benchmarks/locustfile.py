"""Load: closed-loop clients POSTing the development questions to /api/answer, back to back.

Run by `python -m benchmarks http`. Besides locust's own CSV, every request's
latency, status, Retry-After and host go to the JSON file named by BENCH_RECORDS, so
the benchmark can split accepted answers from deliberate refusals. With BENCH_HOSTS
(base URLs, comma-separated) each request goes to the next of them in turn, as a
round-robin load balancer would send it; without it, to locust's ``--host``.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

from locust import FastHttpUser, constant, events, task

QUESTIONS = [
    json.loads(line)["question"]
    for line in Path(os.environ["BENCH_QUESTIONS"]).read_text().splitlines()
    if line.strip()
]
_next_question = itertools.cycle(QUESTIONS).__next__
HOSTS = [host for host in os.environ.get("BENCH_HOSTS", "").split(",") if host]
_next_host = itertools.cycle(HOSTS or [""]).__next__
_records: list[tuple[float, float, int, bool, str]] = []  # start, ms, status, Retry-After, host


@events.request.add_listener
def record(
    response_time: float, response: object, start_time: float, name: str, **_: object
) -> None:
    status = getattr(response, "status_code", 0) or 0
    headers = getattr(response, "headers", None) or {}
    _records.append((start_time, response_time, status, "retry-after" in headers, name))


@events.quitting.add_listener
def save(**_: object) -> None:
    Path(os.environ["BENCH_RECORDS"]).write_text(json.dumps(_records))


class Asker(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0

    @task
    def ask(self) -> None:
        # A bytes body: geventhttpclient then sends headers and body in one write.
        body = json.dumps({"question": _next_question(), "top_k": 5}).encode()
        host = _next_host()  # "" without BENCH_HOSTS: locust's --host
        self.client.post(
            f"{host}/api/answer",
            data=body,
            headers={"content-type": "application/json"},
            name=host or "/api/answer",
        )
