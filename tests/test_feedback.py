"""Feedback storage: round trip, migrations, validation, concurrent writers, export and stats.

The behaviour tests run over both stores: the SQLite file and PostgreSQL (``RAG_DATABASE_URL``).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner
from conftest import file_or_database

from rag.cli import cli
from rag.dbpool import close_pool
from rag.errors import InputError, RagError
from rag.feedback import (
    SCHEMA_VERSION,
    Feedback,
    HelpfulRate,
    export_feedback,
    feedback_stats,
    record_feedback,
)
from rag.settings import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tiny_settings: Settings) -> Iterator[Settings]:
    """``tiny_settings`` with feedback in the SQLite file, or in a fresh PostgreSQL database."""
    yield from file_or_database(request, tiny_settings, tiny_settings.feedback_db)


def _feedback(helpful: bool = True, **changes: object) -> Feedback:
    values: dict[str, object] = {
        "question": "What does an AI engineer earn?",
        "answer": "Median pay is $150,000.",
        "passage_ids": ("p1", "p2"),
        "helpful": helpful,
        "articles": ("Salaries", "Salaries"),
        "sections": ("Pay", "Pay › US"),
    }
    values.update(changes)
    return Feedback(**values)  # type: ignore[arg-type]


def _runner(settings: Settings) -> CliRunner:
    """The CLI with the same store as ``settings`` (``RAG_DATABASE_URL`` set or unset)."""
    return CliRunner(env={"RAG_DATABASE_URL": settings.database_url or None})


def _export(settings: Settings, format: str) -> str:
    out = io.StringIO()
    export_feedback(settings, format, out)  # type: ignore[arg-type]
    return out.getvalue()


def test_round_trip_through_jsonl(store: Settings) -> None:
    first = record_feedback(store, _feedback(comment="  Clear and sourced. "))
    second = record_feedback(
        store,
        Feedback("Is Python needed?", "Yes.", ["p9"], False, api_key="mobile"),
    )

    rows = [json.loads(line) for line in _export(store, "jsonl").splitlines()]

    assert (first, second) == (1, 2)
    assert store.feedback_db.exists() is not bool(store.database_url)  # no file beside it
    assert [{k: v for k, v in row.items() if k != "created_at"} for row in rows] == [
        {
            "id": 1,
            "helpful": True,
            "question": "What does an AI engineer earn?",
            "answer": "Median pay is $150,000.",
            "comment": "Clear and sourced.",
            "passage_ids": ["p1", "p2"],
            "articles": ["Salaries", "Salaries"],
            "sections": ["Pay", "Pay › US"],
            "api_key": None,
        },
        {
            "id": 2,
            "helpful": False,
            "question": "Is Python needed?",
            "answer": "Yes.",
            "comment": "",
            "passage_ids": ["p9"],
            "articles": ["(unknown)"],
            "sections": ["(unknown)"],
            "api_key": "mobile",
        },
    ]
    assert rows[0]["created_at"].endswith("+00:00")


def test_database_is_in_wal_mode_at_the_current_schema(tiny_settings: Settings) -> None:
    record_feedback(tiny_settings, _feedback())

    with sqlite3.connect(tiny_settings.feedback_db) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_version_1_database_is_migrated_keeping_its_feedback(tiny_settings: Settings) -> None:
    tiny_settings.data_dir.mkdir()
    with sqlite3.connect(tiny_settings.feedback_db) as db:
        db.executescript(
            """
            CREATE TABLE feedback (
                id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, question TEXT NOT NULL,
                answer TEXT NOT NULL, helpful INTEGER NOT NULL CHECK (helpful IN (0, 1)),
                comment TEXT NOT NULL DEFAULT '', passage_ids TEXT NOT NULL DEFAULT '[]');
            INSERT INTO feedback VALUES (1, '2025-01-01T00:00:00+00:00', 'Old question?',
                'Old answer.', 0, 'too vague', '["old-a", "old-b"]');
            PRAGMA user_version = 1;
            """
        )

    record_feedback(tiny_settings, _feedback())
    rows = [json.loads(line) for line in _export(tiny_settings, "jsonl").splitlines()]

    assert [(r["id"], r["question"], r["passage_ids"], r["articles"]) for r in rows] == [
        (1, "Old question?", ["old-a", "old-b"], ["(unknown)", "(unknown)"]),
        (2, "What does an AI engineer earn?", ["p1", "p2"], ["Salaries", "Salaries"]),
    ]


def test_an_empty_version_0_file_gets_the_whole_schema(tiny_settings: Settings) -> None:
    tiny_settings.data_dir.mkdir()
    tiny_settings.feedback_db.touch()

    assert record_feedback(tiny_settings, _feedback()) == 1


def test_a_database_newer_than_the_code_is_refused(tiny_settings: Settings) -> None:
    tiny_settings.data_dir.mkdir()
    with sqlite3.connect(tiny_settings.feedback_db) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(RagError, match=rf"schema version {SCHEMA_VERSION + 1} .* upgrade rag"):
        record_feedback(tiny_settings, _feedback())


def test_a_too_long_comment_is_rejected_with_its_length() -> None:
    with pytest.raises(InputError, match="the comment is 2001 characters long; at most 2000"):
        _feedback(comment="x" * 2001)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"question": "   "}, "the question is empty"),
        ({"question": "q" * 1001}, "longer than 1000 characters"),
        ({"answer": ""}, "the answer is empty"),
        ({"answer": "a" * 20_001}, "longer than 20000 characters"),
        ({"helpful": "yes"}, "helpful must be true or false"),
        ({"articles": ("Salaries",)}, r"articles must name one entry per passage id \(1 for 2"),
        ({"passage_ids": ("p1", "")}, "passage ids, articles and sections must be non-empty"),
        ({"passage_ids": [f"p{n}" for n in range(51)], "articles": (), "sections": ()}, "50"),
    ],
)
def test_invalid_feedback_is_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _feedback(**changes)


def test_concurrent_writers_lose_nothing(store: Settings) -> None:
    errors: list[BaseException] = []

    def write(thread: int) -> None:
        try:
            for n in range(200):
                record_feedback(store, _feedback(n % 2 == 0, question=f"t{thread} q{n}"))
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    rows = [json.loads(line) for line in _export(store, "jsonl").splitlines()]
    assert len(rows) == 1600
    assert {r["question"] for r in rows} == {f"t{t} q{n}" for t in range(8) for n in range(200)}
    assert feedback_stats(store).votes == 1600


def test_csv_export_joins_lists_and_defuses_formulas(store: Settings) -> None:
    record_feedback(store, _feedback(comment='=HYPERLINK("http://x")'))

    rows = list(csv.reader(io.StringIO(_export(store, "csv"))))

    assert rows[0] == [
        "id",
        "created_at",
        "helpful",
        "question",
        "answer",
        "comment",
        "passage_ids",
        "articles",
        "sections",
        "api_key",
    ]
    assert rows[1][:2] == ["1", rows[1][1]]
    assert rows[1][2:] == [
        "True",
        "What does an AI engineer earn?",
        "Median pay is $150,000.",
        '\'=HYPERLINK("http://x")',
        "p1 | p2",
        "Salaries | Salaries",
        "Pay | Pay › US",
        "",
    ]


def test_export_of_no_feedback_is_a_header_only(store: Settings) -> None:
    assert _export(store, "csv").splitlines() == [
        '"id","created_at","helpful","question","answer","comment","passage_ids","articles",'
        '"sections","api_key"'
    ]
    assert _export(store, "jsonl") == ""
    with pytest.raises(InputError, match="format must be one of csv, jsonl"):
        _export(store, "xml")


def test_stats_put_the_worst_article_and_section_first(store: Settings) -> None:
    def vote(helpful: bool, *cited: tuple[str, str]) -> None:
        record_feedback(
            store,
            _feedback(
                helpful,
                passage_ids=[f"p{n}" for n in range(len(cited))],
                articles=[a for a, _ in cited],
                sections=[s for _, s in cited],
            ),
        )

    for _ in range(3):
        vote(True, ("Salaries", "Pay"), ("Salaries", "Pay"))  # one vote per section
    vote(False, ("Salaries", "Skills"))
    vote(False, ("Roadmap", "Start"), ("Salaries", "Pay"))
    vote(True, ("Roadmap", "Start"))
    record_feedback(store, Feedback("Hi?", "No answer.", (), False))

    stats = feedback_stats(store)

    assert (stats.votes, stats.helpful) == (7, 4)
    assert stats.by_article == (
        HelpfulRate("Roadmap", None, 2, 1),
        HelpfulRate("Salaries", None, 5, 3),
    )
    assert stats.by_section == (
        HelpfulRate("Salaries", "Skills", 1, 0),
        HelpfulRate("Roadmap", "Start", 2, 1),
        HelpfulRate("Salaries", "Pay", 4, 3),
    )
    assert stats.by_section[-1].rate == 0.75


def test_stats_of_no_feedback_are_empty(store: Settings) -> None:
    assert feedback_stats(store).by_article == ()
    assert not store.feedback_db.exists()


def test_a_database_deleted_while_in_use_is_created_again(tiny_settings: Settings) -> None:
    record_feedback(tiny_settings, _feedback())
    for path in tiny_settings.data_dir.iterdir():
        path.unlink()

    assert record_feedback(tiny_settings, _feedback()) == 1
    assert len(_export(tiny_settings, "jsonl").splitlines()) == 1


def test_cli_exports_and_sums_up_feedback(store: Settings) -> None:
    record_feedback(store, _feedback(True, articles=("Roadmap", "Salaries")))
    record_feedback(store, _feedback(False, comment="wrong figure"))
    runner = _runner(store)
    data = ["--data", str(store.data_dir)]
    output = store.data_dir.parent / "export.jsonl"

    as_csv = runner.invoke(cli, ["feedback", "export", "--format", "csv", *data])
    to_file = runner.invoke(
        cli, ["feedback", "export", "--format", "jsonl", "--output", str(output), *data]
    )
    stats = runner.invoke(cli, ["feedback", "stats", *data])

    assert as_csv.exit_code == 0, as_csv.output
    assert [row[5] for row in csv.reader(io.StringIO(as_csv.stdout))] == [
        "comment",
        "",
        "wrong figure",
    ]
    assert to_file.exit_code == 0, to_file.output
    assert "exported 2 feedback to" in to_file.output
    assert [json.loads(line)["helpful"] for line in output.read_text().splitlines()] == [
        True,
        False,
    ]
    assert stats.exit_code == 0, stats.output
    assert stats.stdout.splitlines() == [
        "2 feedback, 1 helpful (50%)",
        "",
        "By article, worst first:",
        "HELPFUL  VOTES  ARTICLE",
        "    50%      2  Salaries",
        "   100%      1  Roadmap",
        "",
        "By section, worst first:",
        "HELPFUL  VOTES  SECTION",
        "     0%      1  Salaries › Pay",
        "    50%      2  Salaries › Pay › US",
        "   100%      1  Roadmap › Pay",
    ]


def test_cli_stats_without_feedback(store: Settings) -> None:
    result = _runner(store).invoke(cli, ["feedback", "stats", "--data", str(store.data_dir)])

    assert result.exit_code == 0, result.output
    assert result.output == "no feedback yet\n"


def test_postgresql_writes_to_a_locked_table_give_up_soon_and_are_capped(
    tiny_settings: Settings, database_url: str
) -> None:
    settings = tiny_settings.with_(
        database_url=database_url, feedback_busy_timeout_seconds=5, feedback_max_writers=2
    )
    record_feedback(settings, _feedback())  # the tables exist
    outcomes: list[object] = []

    def write() -> None:
        try:
            outcomes.append(record_feedback(settings, _feedback(False)))
        except RagError as exc:
            outcomes.append(exc)

    with psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE feedback IN EXCLUSIVE MODE")  # another session's long write
        writers = [threading.Thread(target=write, daemon=True) for _ in range(2)]
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 60
        while _waiting_on_a_lock(holder) < 2:
            assert time.monotonic() < deadline, "the two writes never reached the lock"
            time.sleep(0.05)
        with pytest.raises(RagError, match=r"busy \(2 feedback writes are waiting\); try again"):
            record_feedback(settings, _feedback())  # refused at once: both places are taken
        for writer in writers:
            writer.join(timeout=60)
            assert not writer.is_alive(), "a feedback write waited on past its timeout"
        holder.rollback()

    assert [str(o) for o in outcomes] == [
        "the feedback database in PostgreSQL is busy (a write waited over 5 s); try again"
    ] * 2
    assert record_feedback(settings, _feedback()) == 2  # the refused writes left nothing
    assert [r["helpful"] for r in map(json.loads, _export(settings, "jsonl").splitlines())] == [
        True,
        True,
    ]
    close_pool(database_url)


def _waiting_on_a_lock(db: psycopg.Connection) -> int:
    with psycopg.connect(db.info.dsn, autocommit=True) as observer:
        (count,) = observer.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
    return count


def test_a_postgresql_feedback_schema_newer_than_the_code_is_refused(
    tiny_settings: Settings, database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("CREATE TABLE rag_schema (component text PRIMARY KEY, version integer)")
        db.execute("INSERT INTO rag_schema VALUES ('feedback', 99)")

    with pytest.raises(RagError, match=r"feedback schema is version 99, newer than this release"):
        feedback_stats(tiny_settings.with_(database_url=database_url))
    close_pool(database_url)
