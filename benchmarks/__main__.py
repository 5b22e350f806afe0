"""`python -m benchmarks [all|latency|http|index|scale|replicas|swap|soak|worker|int8]`: measure."""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks import (
    common,
    indexing,
    latency,
    load,
    quantize,
    replicas,
    scale,
    soak,
    swap,
    worker,
)
from rag.errors import RagError

TARGETS = {
    "8 clients": ">= 60 answers/s, p95 <= 150 ms, no errors",
    "64 clients": "only 503/429 with Retry-After, p99 <= 2000 ms for accepted answers",
    "memory": "RSS <= 1024 MB a worker",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("what", nargs="?", default="all", choices=["all", *PARTS, *ALONE])
    parser.add_argument("--workers", type=int, default=2, help="rag serve workers (default 2)")
    parser.add_argument("--seconds", type=int, default=20, help="seconds per client count")
    parser.add_argument(
        "--clients",
        default=None,
        help="client counts, comma-separated (http: 1,8,32,64; replicas: 8,32; swap: 4)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="in-process rounds over dev set")
    parser.add_argument("--profile", action="store_true", help="profile the in-process answers")
    parser.add_argument("--factors", default="1,10,100,1000", help="scale: passage multipliers")
    parser.add_argument(
        "--soak-seconds", type=int, default=180, help="soak: how long to run (default 180)"
    )
    parser.add_argument("--short", action="store_true", help="soak: a 45-second run")
    parser.add_argument("--runs", type=int, default=3, help="worker: cold starts (default 3)")
    parser.add_argument("--rebuilds", type=int, default=6, help="swap: rebuilds (default 6)")
    args = parser.parse_args()

    if args.what == "replicas":
        clients = replicas.CLIENTS if args.clients is None else _counts(args.clients)
        replicas.run(args.seconds, clients)
        return
    if args.what == "swap":
        swap.run(args.rebuilds, 4 if args.clients is None else int(args.clients))
        return

    if args.what == "worker":
        worker.main(args.runs)
        return
    if args.what == "int8":
        quantize.main()
        return

    if args.what == "soak":
        soak.run(45 if args.short else args.soak_seconds)
        return

    if args.what == "scale":
        scale.run(tuple(int(f) for f in args.factors.split(",")))
        return
    results: dict = {"machine": common.machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    tables = []
    parts = PARTS if args.what == "all" else [args.what]
    if "latency" in parts:
        results["latency"] = latency.run(args.rounds, profile=args.profile)
        tables.append(latency.latency_table(results["latency"]))
    if "http" in parts:
        clients = load.CLIENTS if args.clients is None else _counts(args.clients)
        results["http"] = load.run(args.workers, args.seconds, clients)
        tables.append(load.load_table(results["http"]))
        rss = ", ".join(f"{m['rss_mb']} MB" for m in results["http"]["memory"])
        tables.append(f"RSS after the run, per worker: {rss}")
    if "index" in parts:
        results["index"] = indexing.run()
        tables.append(indexing.indexing_table(results["index"]))
    results["targets"] = TARGETS
    path = common.write_results("bench.json", {**_earlier(), **results})
    machine = results["machine"]
    print(
        f"\n{machine['cores']} cores, {machine['cpu']}, {machine['memory_gb']} GB, "
        f"load average at start {machine['load_average_at_start']}\n"
    )
    print("\n\n".join(tables))
    if args.profile:
        print("\nWhere an answer's time goes (cumulative ms per answer):")
        print(json.dumps(results["latency"]["profile"], indent=1))
    print(f"\nwritten to {path.relative_to(common.ROOT)}")


PARTS = ["latency", "http", "index"]
ALONE = ["scale", "replicas", "swap", "soak", "worker", "int8"]


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(","))


def _earlier() -> dict:
    """The parts of the last bench.json this run did not measure (kept, not lost)."""
    try:
        return json.loads((common.RESULTS / "bench.json").read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    try:
        main()
    except RagError as exc:  # e.g. no index yet, or one of an older format
        sys.exit(f"Error: {exc} (`make bench` builds the index first)")
