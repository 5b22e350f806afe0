"""Replicas sharing one PostgreSQL: feedback and API keys seen alike by every app instance."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, one_article_index
from fastapi.testclient import TestClient

from rag.dbpool import close_pool
from rag.embedding import Embedder
from web.app import create_app

ARTICLE = """---
title: Data engineer careers
url: https://careers.example/data-engineering/
---

## Pay

Data engineers in Lisbon earn about 52,000 euros a year.
"""
FEEDBACK = {"question": "What do data engineers earn?", "answer": "a", "passage_ids": []}


def test_two_replicas_share_feedback_and_keys(
    tmp_path: Path, embedder: Embedder, database_url: str
) -> None:
    built = one_article_index(
        tmp_path, ARTICLE, embedder, database_url=database_url, trusted_hosts=("testserver",)
    )
    # Two machines: the same database, each its own data folder (no file is shared).
    first, second = (built.with_(data_dir=tmp_path / f"data-{n}") for n in (1, 2))

    def operator(*args: str) -> subprocess.CompletedProcess[str]:
        """`rag ARGS` run by an operator on a third machine."""
        env = {**os.environ, "RAG_DATABASE_URL": database_url}
        command = [sys.executable, "-m", "rag.cli", *args, "--data", str(tmp_path / "data-op")]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)

    with TestClient(create_app(first)) as one, TestClient(create_app(second)) as other:
        assert one.post("/api/feedback", json={**FEEDBACK, "helpful": True}).status_code == 201
        assert other.post("/api/feedback", json={**FEEDBACK, "helpful": False}).status_code == 201
        stats = operator("feedback", "stats")

        created = operator("keys", "create", "mobile")
        key = created.stdout.strip()
        time.sleep(1.0)  # what each replica read of the keys (none yet) is out of date by now
        headers = {"Authorization": f"Bearer {key}"}
        accepted = [app.get("/api/articles", headers=headers).status_code for app in (one, other)]
        shut = other.get("/api/articles").status_code

        revoked = operator("keys", "revoke", "mobile")
        time.sleep(1.0)  # a revoked key is refused everywhere within a second
        refused = [app.get("/api/articles", headers=headers) for app in (one, other)]

    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.splitlines()[0] == "2 feedback, 1 helpful (50%)"
    assert created.returncode == 0, created.stderr
    assert accepted == [200, 200]
    assert shut == 401
    assert revoked.returncode == 0, revoked.stderr
    assert [r.status_code for r in refused] == [401, 401]
    assert refused[1].json()["detail"] == "the API key is not valid (mistyped or revoked)"
    assert not any(p.exists() for n in (1, 2) for p in (tmp_path / f"data-{n}").glob("*.json"))
    assert not (tmp_path / "data-1" / "feedback.sqlite3").exists()
    close_pool(database_url)
