"""Benchmark plumbing: the machine, the questions, percentiles, tables and result files."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEV_QUESTIONS = ROOT.parent / "shared" / "eval" / "dev.jsonl"
BIN = ROOT / ".venv" / "bin"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gb": round(memory_kb / 1024**2, 1),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def serving_processes(server: psutil.Process) -> list[psutil.Process]:
    """The processes that answer requests: the workers under `rag serve --workers N`
    (multiprocessing's resource tracker left out), or the server itself with one worker."""
    children = [
        p
        for p in server.children(recursive=True)
        if "resource_tracker" not in " ".join(p.cmdline())
    ]
    return children or [server]


def worker_memory(server: psutil.Process) -> list[dict]:
    """RSS of each process serving requests, in MB."""
    return [
        {"pid": p.pid, "rss_mb": round(p.memory_info().rss / 1024**2)}
        for p in serving_processes(server)
    ]


def tree_usage(server: psutil.Process) -> tuple[int, int]:
    """Resident bytes and open file descriptors of ``server`` and all its descendants."""
    processes = [server, *server.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes), sum(p.num_fds() for p in processes)


def dev_questions(path: Path = DEV_QUESTIONS) -> list[str]:
    """Only the question strings of the development set."""
    return [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]


def percentiles(milliseconds: list[float], digits: int = 1) -> dict[str, float | None]:
    if not milliseconds:
        return {"p50": None, "p95": None, "p99": None}
    values = np.percentile(milliseconds, [50, 95, 99])
    return {f"p{q}": round(float(v), digits) for q, v in zip((50, 95, 99), values, strict=True)}


def table(title: str, headers: list[str], rows: list[list[object]]) -> str:
    """A plain-text table, columns right-aligned except the first."""
    cells = [headers, *[["—" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [title]
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return path


def stop_server(server: subprocess.Popen) -> None:
    """Stop a `rag serve` as Ctrl-C does (it drains), killing it after 30 s if it hangs."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
