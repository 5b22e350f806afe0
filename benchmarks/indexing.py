"""Indexing time: `rag index` cold (empty embedding cache) and warm (nothing changed)."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import BIN, ROOT, table


def _rag_index(index_dir: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "rag"), "index", "--quiet", "--index", str(index_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    build = re.search(r"in ([\d.]+) s", done.stdout)
    embedded = re.search(r"\((\d+) texts embedded\)", done.stdout)
    return {
        "wall_seconds": round(wall, 1),  # the whole command: start-up, model load, build
        "build_seconds": float(build.group(1)) if build else None,  # build_index alone
        "texts_embedded": int(embedded.group(1)) if embedded else None,
    }


def run() -> dict:
    """Build into a temporary index folder twice: first with no cache, then with it."""
    with tempfile.TemporaryDirectory() as scratch:
        index_dir = Path(scratch) / "index"
        return {"cold": _rag_index(index_dir), "warm": _rag_index(index_dir)}


def indexing_table(results: dict) -> str:
    return table(
        "rag index (real corpus)",
        ["run", "wall s", "build s", "texts embedded"],
        [
            [name, r["wall_seconds"], r["build_seconds"], r["texts_embedded"]]
            for name, r in results.items()
        ],
    )
