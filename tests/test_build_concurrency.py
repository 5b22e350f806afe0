"""Concurrent builds: one lock over build, swap and prune; no lost update, no half index."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import article, rag, wait_for_line

from rag.cli import cli
from rag.corpus import list_articles
from rag.embedding import Embedder
from rag.errors import IndexMismatchError
from rag.index import build_index, builds_dir, index_is_current, load_index
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def built(tiny_settings: Settings, embedder: Embedder) -> Settings:
    (tiny_settings.corpus_dir / "base.md").write_text(article("base", "Testing"))
    build_index(tiny_settings, embedder)
    return tiny_settings


def test_two_concurrent_adds_keep_both_articles_and_a_whole_index(
    built: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    (tmp_path / "a.md").write_text(article("alpha", "Kotlin"))
    (tmp_path / "b.md").write_text(article("beta", "Haskell"))

    first = rag(built, "add", str(tmp_path / "a.md"))
    time.sleep(0.04)
    second = rag(built, "add", str(tmp_path / "b.md"))
    results = [p.communicate(timeout=600) for p in (first, second)]

    for process, (_, err) in zip((first, second), results, strict=True):
        assert process.returncode == 0, err
        assert "Traceback" not in err, err
    assert sorted(a.slug for a in list_articles(built)) == ["alpha", "base", "beta"]
    assert sorted(p.name for p in built.corpus_dir.iterdir()) == ["a.md", "b.md", "base.md"]
    assert index_is_current(built)
    assert len(load_index(built, embedder).articles) == 3
    builds = [p for p in builds_dir(built.index_dir).glob("build-*")]
    assert all((p / "manifest.json").exists() for p in builds), builds


def test_a_build_in_progress_of_a_live_process_is_not_pruned(
    built: Settings, embedder: Embedder
) -> None:
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        root = builds_dir(built.index_dir)
        in_progress = root / f"build-{writer.pid}-abc123"
        leftover = root / f"build-{dead.pid}-def456"
        for folder in (in_progress, leftover):
            folder.mkdir()
            (folder / "dense.faiss").write_bytes(b"half written")

        (built.corpus_dir / "more.md").write_text(article("more", "Rust"))
        build_index(built, embedder)

        assert (in_progress / "dense.faiss").read_bytes() == b"half written"
        assert not leftover.exists()
    finally:
        writer.kill()
        writer.wait()


def test_a_second_build_waits_for_the_first(built: Settings) -> None:
    from rag.index import build_lock

    (built.corpus_dir / "more.md").write_text(article("more", "Rust"))
    with build_lock(built):
        waiting = rag(built, "index", "--quiet")
        assert waiting.stderr is not None
        wait_for_line(waiting.stderr, f"another build (process {os.getpid()}) is running; waiting")
        time.sleep(1.0)
        assert waiting.poll() is None  # still queued behind the lock
        assert sorted(a.slug for a in list_articles(built)) == ["base"]
    assert waiting.wait(timeout=600) == 0
    assert waiting.stdout is not None
    assert waiting.stdout.read().startswith("indexed 2 articles")
    assert sorted(a.slug for a in list_articles(built)) == ["base", "more"]


def test_if_needed_rebuilds_an_index_missing_a_file(built: Settings) -> None:
    (built.index_dir / "dense.faiss").unlink()

    result = CliRunner().invoke(
        cli,
        [
            "index",
            "--if-needed",
            "--quiet",
            "--corpus",
            str(built.corpus_dir),
            "--index",
            str(built.index_dir),
        ],
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("indexed 1 articles"), result.stdout
    assert (built.index_dir / "dense.faiss").exists()


def test_a_build_missing_a_file_is_not_swapped_in(
    built: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag.index

    in_use = built.index_dir.resolve()
    write = rag.index._write

    def write_then_lose_a_file(build: Path, *args: object, **kwargs: object) -> object:
        written = write(build, *args, **kwargs)  # type: ignore[arg-type]
        (build / "sentences.npy").unlink()  # as a concurrent prune used to do
        return written

    monkeypatch.setattr(rag.index, "_write", write_then_lose_a_file)
    (built.corpus_dir / "more.md").write_text(article("more", "Rust"))

    with pytest.raises(IndexMismatchError, match=r"the index lacks sentences\.npy"):
        build_index(built, embedder)
    assert built.index_dir.resolve() == in_use
    assert len(load_index(built, embedder).articles) == 1
