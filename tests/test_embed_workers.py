"""Embedding workers: real `rag index --worker` processes sharing a real PostgreSQL queue."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from conftest import rag, wait_for_line

from rag.embedding import Embedder
from rag.index import build_index
from rag.settings import Settings

TOPICS = ("data", "cloud", "security", "robotics", "design", "finance", "health", "legal")
SKILLS = ("Python", "SQL", "statistics", "writing", "negotiation", "testing")


def _article(topic: str) -> str:
    sections = []
    for n, skill in enumerate(SKILLS):
        sentences = " ".join(
            f"{topic.title()} analysts in city {k} use {skill} on project {n * 10 + k} "
            f"and earn {40 + n + k},000 euros."
            for k in range(6)
        )
        sections.append(f"## {skill} for {topic}\n\n{sentences}\n")
    return (
        f"---\ntitle: {topic.title()} careers\nurl: https://careers.example/{topic}/\n---\n\n"
        + "\n".join(sections)
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """A corpus of some hundreds of texts, and its index built in one process, as today."""
    root = tmp_path_factory.mktemp("workers")
    (root / "corpus").mkdir()
    for topic in TOPICS:
        (root / "corpus" / f"{topic}.md").write_text(_article(topic), encoding="utf-8")
    single = Settings(corpus_dir=root / "corpus", index_dir=root / "single", data_dir=root / "data")
    build_index(single, embedder)
    return root


def _rag(root: Path, database_url: str, index: str, *args: str) -> subprocess.Popen[str]:
    settings = Settings(
        corpus_dir=root / "corpus",
        index_dir=root / index,
        data_dir=root / "data",
        database_url=database_url,
    )
    return rag(settings, *args)


def _assert_same_vectors(root: Path, index: str) -> None:
    vectors = (("passage_vectors.npy", 1e-5), ("sentences.npy", 2e-3), ("contexts.npy", 2e-3))
    for name, tolerance in vectors:
        single = np.load(root / "single" / name).astype(np.float32)
        shared = np.load(root / index / name).astype(np.float32)
        assert single.shape == shared.shape
        np.testing.assert_allclose(shared, single, atol=tolerance)


def _finish(process: subprocess.Popen[str], timeout: float = 600) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def test_two_workers_and_the_coordinator_embed_what_one_process_would(
    corpus: Path, database_url: str
) -> None:
    workers = [_rag(corpus, database_url, "shared", "index", "--worker", "--wait", "--batch", "16")
               for _ in range(2)]  # fmt: skip
    try:
        for worker in workers:
            wait_for_line(worker.stderr, "ready")  # type: ignore[arg-type]
        summary = _finish(_rag(corpus, database_url, "shared", "index"))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)

    assert "indexed 8 articles" in summary
    _assert_same_vectors(corpus, "shared")
    with psycopg.connect(database_url) as db:
        by = {who for (who,) in db.execute("SELECT DISTINCT embedded_by FROM embedding")}
        assert db.execute("SELECT count(*) FROM embedding_queue").fetchone() == (0,)
    pids = {int(who.rsplit(":", 1)[1]) for who in by}
    assert {w.pid for w in workers} <= pids, f"not every worker took a batch: {by}"


def test_a_worker_killed_mid_batch_leaves_its_batch_to_another(
    corpus: Path, database_url: str
) -> None:
    coordinator = _rag(corpus, database_url, "after-kill", "index", "--no-embed")
    line = wait_for_line(coordinator.stderr, "queued")  # type: ignore[arg-type]
    queued = int(line.split("queued ", 1)[1].split()[0])
    with psycopg.connect(database_url, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM embedding_queue").fetchone() == (queued,)
        first = _rag(corpus, database_url, "after-kill", "index", "--worker", "--batch", "4096")
        wait_for_line(first.stderr, f"took {queued} texts")  # type: ignore[arg-type]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)

        assert db.execute("SELECT count(*) FROM embedding").fetchone() == (0,)
        deadline = time.monotonic() + 60
        while _free(db) < queued:  # the server ends the dead worker's transaction
            assert time.monotonic() < deadline, "the killed worker's batch stayed locked"
            time.sleep(0.2)

        second = _rag(corpus, database_url, "after-kill", "index", "--worker")
        assert f"embedded {queued} texts" in _finish(second)
        summary = _finish(coordinator)

        assert "indexed 8 articles" in summary
        assert db.execute("SELECT count(*) FROM embedding").fetchone() == (queued,)
    _assert_same_vectors(corpus, "after-kill")


def _free(db: psycopg.Connection) -> int:
    """Queued texts no transaction holds."""
    with db.transaction():
        rows = db.execute("SELECT key FROM embedding_queue FOR UPDATE SKIP LOCKED").fetchall()
    return len(rows)


def test_worker_options_need_a_database(tiny_settings: Settings) -> None:
    from click.testing import CliRunner

    from rag.cli import cli

    runner = CliRunner(env={"RAG_DATABASE_URL": None})
    worker = runner.invoke(cli, ["index", "--worker", "--corpus", str(tiny_settings.corpus_dir)])
    waiting = runner.invoke(cli, ["index", "--wait", "--corpus", str(tiny_settings.corpus_dir)])

    assert worker.exit_code == 1
    assert worker.output == "Error: --worker needs RAG_DATABASE_URL: workers share a database\n"
    assert waiting.exit_code == 1
    assert "--wait and --batch go with --worker" in waiting.output


def test_a_text_queued_again_after_it_was_embedded_is_not_embedded_twice(
    tmp_path: Path, database_url: str, embedder: Embedder
) -> None:
    """A coordinator re-queues its missing texts while a worker's batch commits: the row
    can come back after its vector is stored. The worker takes it off without work."""
    from rag.embedcache import _pool, _to_bytes, run_worker
    from rag.embedding import text_key

    settings = Settings(data_dir=tmp_path, database_url=database_url)
    vector = embedder.encode(["already embedded"])[0]
    done, new = text_key(settings.model, "already embedded"), text_key(settings.model, "new")
    with _pool(settings).connection() as db:  # type: ignore[attr-defined]
        db.execute(
            "INSERT INTO embedding (key, model, dimension, vector, embedded_by) "
            "VALUES (%s, %s, %s, %s, 'earlier:1')",
            (done, settings.model, len(vector), _to_bytes(vector)),
        )
        for key, text in ((done, "already embedded"), (new, "new")):
            db.execute(
                "INSERT INTO embedding_queue (key, model, text) VALUES (%s, %s, %s)",
                (key, settings.model, text),
            )
    said: list[str] = []

    assert run_worker(settings, report=said.append, embedder=embedder) == 1
    assert "took 1 texts" in said
    with psycopg.connect(database_url) as db:
        assert db.execute("SELECT count(*) FROM embedding_queue").fetchone() == (0,)
        rows = dict(db.execute("SELECT key, embedded_by FROM embedding").fetchall())
    assert rows[done] == "earlier:1"
    assert set(rows) == {done, new}
