"""Load: closed-loop clients POSTing the development questions to /api/answer, back to back.

Run by `python -m benchmarks http`. Besides locust's own CSV, every request's
latency, status and Retry-After go to the JSON file named by BENCH_RECORDS, so
the benchmark can split accepted answers from deliberate refusals.
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
_records: list[tuple[float, float, int, bool]] = []  # start, ms, status, has Retry-After


@events.request.add_listener
def record(response_time: float, response: object, start_time: float, **_: object) -> None:
    status = getattr(response, "status_code", 0) or 0
    headers = getattr(response, "headers", None) or {}
    _records.append((start_time, response_time, status, "retry-after" in headers))


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
        self.client.post("/api/answer", data=body, headers={"content-type": "application/json"})
