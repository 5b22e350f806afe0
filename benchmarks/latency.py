"""In-process latency: `answer_question` over the dev questions, with an optional profile."""

from __future__ import annotations

import cProfile
import io
import pstats
import time

from benchmarks.common import dev_questions, percentiles, table
from rag.answering import answer_question
from rag.encoder import index_encoder
from rag.index import load_index
from rag.retrieval import use_one_thread
from rag.settings import Settings


def run(rounds: int = 5, profile: bool = False) -> dict:
    """Answer every dev question ``rounds`` times (after one warm-up round), as the server does."""
    settings = Settings.from_env()
    index = load_index(settings)
    embedder = index_encoder(settings, index)  # the ONNX export the server encodes with
    use_one_thread()
    questions = dev_questions()
    for question in questions:
        answer_question(index, embedder, question)
    profiler = cProfile.Profile() if profile else None
    latencies = []
    if profiler:
        profiler.enable()
    for _ in range(rounds):
        for question in questions:
            started = time.perf_counter()
            answer_question(index, embedder, question)
            latencies.append((time.perf_counter() - started) * 1000)
    results: dict = {
        "questions": len(questions),
        "rounds": rounds,
        "onnx": True,
        "ms": percentiles(latencies, digits=2),
    }
    if profiler:
        profiler.disable()
        results["profile"] = _top(profiler, len(latencies))
    return results


def _top(profiler: cProfile.Profile, calls: int, count: int = 15) -> list[dict]:
    """The functions with the most cumulative time, in ms per answer."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (path, line, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{path.rsplit('/', 1)[-1]}:{line}({name})", "ms": cumulative})
    rows.sort(key=lambda r: -r["ms"])
    return [{**r, "ms": round(r["ms"] * 1000 / calls, 2)} for r in rows[:count]]


def latency_table(results: dict) -> str:
    ms = results["ms"]
    return table(
        f"In-process answer latency ({results['questions']} dev questions x {results['rounds']})",
        ["encoder", "p50 ms", "p95 ms", "p99 ms"],
        [["onnx" if results["onnx"] else "torch", ms["p50"], ms["p95"], ms["p99"]]],
    )
