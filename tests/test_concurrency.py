"""Feedback writes against a locked database: they give up soon and never hold up answers."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest

from rag.embedding import Embedder
from rag.errors import RagError
from rag.feedback import Feedback, export_feedback, record_feedback
from rag.index import build_index
from rag.settings import Settings

FEEDBACK = {
    "question": "What do data engineers earn?",
    "answer": "A lot.",
    "passage_ids": [],
    "helpful": True,
}


@contextmanager
def locked(db: Path) -> Iterator[None]:
    """Another process's view of the database: a writer holding its write lock."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _stored(settings: Settings) -> int:
    import io

    return export_feedback(settings, "jsonl", io.StringIO())


def test_a_write_to_a_locked_database_gives_up_soon_and_says_so(tiny_settings: Settings) -> None:
    record_feedback(tiny_settings, Feedback("q", "a", (), True))
    outcome: list[object] = []

    def write() -> None:
        try:
            outcome.append(record_feedback(tiny_settings, Feedback("q2", "a", (), False)))
        except RagError as exc:
            outcome.append(exc)

    with locked(tiny_settings.feedback_db):
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        # Generous: the write gives up after about 2 s; before, it waited 30 s.
        writer.join(timeout=15)
        assert not writer.is_alive(), "a feedback write waited over 15 s for the database"

    assert len(outcome) == 1 and isinstance(outcome[0], RagError), outcome
    assert "busy" in str(outcome[0])
    assert record_feedback(tiny_settings, Feedback("q3", "a", (), True)) == 2
    assert _stored(tiny_settings) == 2


def test_answers_stay_fast_while_feedback_waits_on_a_locked_database(
    tiny_settings: Settings,
    embedder: Embedder,
    serve: Callable[[Settings], AbstractContextManager[str]],
) -> None:
    (tiny_settings.corpus_dir / "pay.md").write_text(
        "---\ntitle: Data pay\nurl: https://ex.org/pay/\n---\n## Pay\n\n"
        "Data engineers earn $120,000 a year on average in the United States.\n",
        encoding="utf-8",
    )
    build_index(tiny_settings, embedder, progress=False)
    question = {"question": "What do data engineers earn?"}

    with serve(tiny_settings) as url:
        assert httpx.post(f"{url}/api/feedback", json=FEEDBACK, timeout=60).status_code == 201
        with locked(tiny_settings.feedback_db), ThreadPoolExecutor(60) as pool:
            pending = [
                pool.submit(httpx.post, f"{url}/api/feedback", json=FEEDBACK, timeout=120)
                for _ in range(60)
            ]
            time.sleep(3)  # every feedback request has reached the server
            started = time.monotonic()
            answer = httpx.post(f"{url}/api/answer", json=question, timeout=120)
            took = time.monotonic() - started
            refused = [future.result() for future in pending]
        after = httpx.post(f"{url}/api/feedback", json=FEEDBACK, timeout=60)

    assert answer.status_code == 200, answer.text
    # Generous against a noisy machine: an answer takes milliseconds; it took ~28 s before.
    assert took < 10, f"an answer took {took:.1f} s while feedback waited on the database"
    assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
    assert all("try again" in r.json()["detail"] for r in refused)
    assert after.status_code == 201, after.text
    assert _stored(tiny_settings) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"feedback_busy_timeout_seconds": 0}, "feedback_busy_timeout_seconds must be"),
        ({"feedback_max_writers": 0}, "feedback_max_writers must be at least 1"),
    ],
)
def test_feedback_settings_are_checked(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RagError, match=message):
        Settings(**changes)  # type: ignore[arg-type]
