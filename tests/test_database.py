"""The shared PostgreSQL: connecting, its one-line failure, and schema migrations."""

from __future__ import annotations

import threading

import psycopg
import pytest

from rag.database import connect, migrate
from rag.errors import SettingsError, StorageError
from rag.settings import Settings

STEPS = (
    "CREATE TABLE things (id integer PRIMARY KEY, embedding vector(3))",
    "ALTER TABLE things ADD COLUMN note text; CREATE INDEX things_note ON things (note)",
)


def test_the_server_has_pgvector(database_url: str) -> None:
    with connect(database_url) as db:
        migrate(db, "things", STEPS[:1])
        db.execute("INSERT INTO things VALUES (1, '[1,0,0]'), (2, '[0,1,0]')")
        nearest = db.execute("SELECT id FROM things ORDER BY embedding <#> '[0.9,0.1,0]' LIMIT 1")
        assert nearest.fetchone() == (1,)


def test_migrations_apply_once_in_order_and_resume(database_url: str) -> None:
    with connect(database_url) as db:
        assert migrate(db, "things", STEPS[:1]) == 1
        assert migrate(db, "things", STEPS) == 2
        assert migrate(db, "things", STEPS) == 2
        columns = db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'things'"
        ).fetchall()
        assert {c for (c,) in columns} == {"id", "embedding", "note"}


def test_replicas_migrating_at_once_apply_each_step_once(database_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with connect(database_url) as db:
                migrate(db, "things", STEPS)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with connect(database_url) as db:
        assert db.execute("SELECT version FROM rag_schema").fetchall() == [(2,)]


def test_a_schema_newer_than_the_release_is_refused_in_one_line(database_url: str) -> None:
    with connect(database_url) as db:
        migrate(db, "things", STEPS)
        with pytest.raises(StorageError, match="newer than this release"):
            migrate(db, "things", STEPS[:1])


def test_an_unreachable_database_is_one_line(tmp_path) -> None:
    with pytest.raises(StorageError, match="cannot connect to the database") as caught:
        connect(f"postgresql://postgres@/postgres?host={tmp_path}")
    assert "\n" not in str(caught.value)


def test_a_database_url_that_is_not_postgresql_is_refused() -> None:
    with pytest.raises(SettingsError, match="postgresql://"):
        Settings(database_url="mysql://db/rag")
    assert Settings.from_env({"RAG_DATABASE_URL": "postgresql://db/rag"}).database_url


def test_a_failed_step_leaves_the_version_where_it_was(database_url: str) -> None:
    with connect(database_url) as db:
        migrate(db, "things", STEPS[:1])
        with pytest.raises(psycopg.errors.UndefinedTable):
            migrate(db, "things", (STEPS[0], "ALTER TABLE nothing ADD COLUMN x int"))
        assert db.execute("SELECT version FROM rag_schema").fetchall() == [(1,)]
