"""Feedback: readers' verdicts on answers, kept in SQLite or PostgreSQL, exported and summed up.

With ``RAG_DATABASE_URL`` set, every replica writes to and reads from the same tables of
that database (component ``feedback``); otherwise the SQLite file in the data folder.
The SQL is the same for both: written with ``?`` placeholders, run by PostgreSQL as
``%s``.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TextIO

from rag.errors import InputError, RagError
from rag.files import private_file, private_folder
from rag.settings import Settings

MAX_QUESTION_CHARS = 1000  # the longest question `answer_question` accepts
MAX_ANSWER_CHARS = 20_000
MAX_COMMENT_CHARS = 2000
MAX_PASSAGES = 50
MAX_FIELD_CHARS = 500  # a passage id, an article title or a section path
UNKNOWN = "(unknown)"  # article or section of feedback stored before they were recorded
EXPORT_FORMATS = ("csv", "jsonl")

# Forward migrations: step i takes the database from version i to i + 1. Steps are never
# edited once released; a change of schema is a new step at the end.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        question TEXT NOT NULL,
        answer TEXT NOT NULL,
        helpful INTEGER NOT NULL CHECK (helpful IN (0, 1)),
        comment TEXT NOT NULL DEFAULT '',
        passage_ids TEXT NOT NULL DEFAULT '[]'
    );
    """,
    """
    CREATE TABLE feedback_passage (
        feedback_id INTEGER NOT NULL REFERENCES feedback (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        passage_id TEXT NOT NULL,
        article TEXT,
        section TEXT,
        PRIMARY KEY (feedback_id, position)
    );
    CREATE INDEX feedback_passage_article ON feedback_passage (article, section);
    INSERT INTO feedback_passage (feedback_id, position, passage_id)
        SELECT feedback.id, CAST(cited.key AS INTEGER), cited.value
        FROM feedback, json_each(feedback.passage_ids) AS cited;
    ALTER TABLE feedback ADD COLUMN api_key TEXT;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

# The same schema in PostgreSQL (component "feedback"), with its own forward migrations.
POSTGRES_COMPONENT = "feedback"
_POSTGRES_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE feedback (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        created_at text NOT NULL,
        question text NOT NULL,
        answer text NOT NULL,
        helpful smallint NOT NULL CHECK (helpful IN (0, 1)),
        comment text NOT NULL DEFAULT '',
        passage_ids text NOT NULL DEFAULT '[]',
        api_key text
    );
    CREATE TABLE feedback_passage (
        feedback_id bigint NOT NULL REFERENCES feedback (id) ON DELETE CASCADE,
        position integer NOT NULL,
        passage_id text NOT NULL,
        article text,
        section text,
        PRIMARY KEY (feedback_id, position)
    );
    CREATE INDEX feedback_passage_article ON feedback_passage (article, section);
    """,
)


class _ThreadConnections(threading.local):
    """This thread's open connections, by database path."""

    def __init__(self) -> None:
        self.by_path: dict[Path, tuple[sqlite3.Connection, tuple[int, int] | None]] = {}


_open = _ThreadConnections()


@dataclass(frozen=True)
class Feedback:
    """A reader's verdict on one answer.

    ``articles`` and ``sections``, when given, name the article title and
    section path of each cited passage, in the order of ``passage_ids``; the
    web layer takes them from the index rather than from the request.
    ``api_key`` is the name of the key that sent the feedback, if any.
    """

    question: str
    answer: str
    passage_ids: tuple[str, ...]
    helpful: bool
    comment: str = ""
    articles: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    api_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("passage_ids", "articles", "sections"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "question", self.question.strip())
        object.__setattr__(self, "comment", self.comment.strip())
        if not isinstance(self.helpful, bool):
            raise InputError("helpful must be true or false")
        if not self.question:
            raise InputError("the question is empty")
        if len(self.question) > MAX_QUESTION_CHARS:
            raise InputError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        if not self.answer.strip():
            raise InputError("the answer is empty")
        if len(self.answer) > MAX_ANSWER_CHARS:
            raise InputError(f"the answer is longer than {MAX_ANSWER_CHARS} characters")
        if len(self.comment) > MAX_COMMENT_CHARS:
            raise InputError(
                f"the comment is {len(self.comment)} characters long; "
                f"at most {MAX_COMMENT_CHARS} are accepted"
            )
        if len(self.passage_ids) > MAX_PASSAGES:
            raise InputError(f"at most {MAX_PASSAGES} passage ids are accepted")
        for name in ("articles", "sections"):
            values = getattr(self, name)
            if values and len(values) != len(self.passage_ids):
                raise InputError(
                    f"{name} must name one entry per passage id "
                    f"({len(values)} for {len(self.passage_ids)} passages)"
                )
        for value in (*self.passage_ids, *self.articles, *self.sections):
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
                raise InputError(
                    f"passage ids, articles and sections must be non-empty text "
                    f"of at most {MAX_FIELD_CHARS} characters"
                )


@dataclass(frozen=True)
class HelpfulRate:
    """How often answers citing an article (or one of its sections) were found helpful."""

    article: str
    section: str | None  # None: the whole article
    votes: int
    helpful: int

    @property
    def rate(self) -> float:
        return self.helpful / self.votes if self.votes else 0.0


@dataclass(frozen=True)
class FeedbackStats:
    """Totals, then helpful rates by article and by section, worst first."""

    votes: int
    helpful: int
    by_article: tuple[HelpfulRate, ...]
    by_section: tuple[HelpfulRate, ...]


def record_feedback(settings: Settings, feedback: Feedback) -> int:
    """Store one feedback and return its id; it is committed when this returns.

    Safe to call from many threads and processes at once: a writer waits for
    another one, up to ``feedback_busy_timeout_seconds``. A database locked
    longer, or more than ``feedback_max_writers`` writes of this process in
    progress, is a `RagError` saying to try again (the web answers 503): a
    stuck database never holds the server's threads, and a feedback is either
    stored whole or not at all.
    """
    with _writer_slot(settings), _transaction(settings, write=True) as db:
        (feedback_id,) = db.execute(
            "INSERT INTO feedback (created_at, question, answer, helpful, comment, "
            "passage_ids, api_key) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                datetime.now(UTC).isoformat(timespec="seconds"),
                feedback.question,
                feedback.answer,
                int(feedback.helpful),
                feedback.comment,
                json.dumps(feedback.passage_ids),
                feedback.api_key,
            ),
        ).fetchone()
        db.executemany(
            "INSERT INTO feedback_passage VALUES (?, ?, ?, ?, ?)",
            [
                (
                    feedback_id,
                    n,
                    passage_id,
                    feedback.articles[n] if feedback.articles else None,
                    feedback.sections[n] if feedback.sections else None,
                )
                for n, passage_id in enumerate(feedback.passage_ids)
            ],
        )
    return int(feedback_id)


def export_feedback(settings: Settings, format: Literal["csv", "jsonl"], out: TextIO) -> int:
    """Write every feedback, oldest first, as CSV or JSON lines; return how many.

    In CSV every field is quoted (a carriage return or line break stays inside
    its field), lists are joined with `` | `` and text that a spreadsheet would
    run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return) gets a leading ``'``: comments come from the public.
    """
    if format not in EXPORT_FORMATS:
        raise InputError(f"format must be one of {', '.join(EXPORT_FORMATS)} (got {format!r})")
    rows = _rows(settings)
    if format == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return len(rows)
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(_COLUMNS)
    for row in rows:
        writer.writerow(
            [_spreadsheet_safe(" | ".join(v) if isinstance(v, list) else v) for v in row.values()]
        )
    return len(rows)


def feedback_stats(settings: Settings) -> FeedbackStats:
    """Helpful rates by article and by section, worst first (then most voted)."""
    if not settings.database_url and not settings.feedback_db.exists():
        return FeedbackStats(0, 0, (), ())
    with _transaction(settings) as db:
        votes, helpful = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(helpful), 0) FROM feedback"
        ).fetchone()
        # A feedback citing three passages of one section is one vote for that section.
        cited = (
            "SELECT DISTINCT feedback_id, COALESCE(article, ?) AS article, {section} AS section "
            "FROM feedback_passage"
        )
        order = "ORDER BY 1.0 * SUM(helpful) / COUNT(*), COUNT(*) DESC, article, section"
        by_article = db.execute(
            f"SELECT article, NULL, COUNT(*), SUM(helpful) FROM "
            f"({cited.format(section='NULL')}) JOIN feedback ON feedback.id = feedback_id "
            f"GROUP BY article, section {order}",
            (UNKNOWN,),
        ).fetchall()
        by_section = db.execute(
            f"SELECT article, section, COUNT(*), SUM(helpful) FROM "
            f"({cited.format(section='COALESCE(section, ?)')}) "
            f"JOIN feedback ON feedback.id = feedback_id GROUP BY article, section {order}",
            (UNKNOWN, UNKNOWN),
        ).fetchall()
    return FeedbackStats(
        votes,
        helpful,
        tuple(HelpfulRate(*row) for row in by_article),
        tuple(HelpfulRate(*row) for row in by_section),
    )


_COLUMNS = (
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
)


def _rows(settings: Settings) -> list[dict]:
    if not settings.database_url and not settings.feedback_db.exists():
        return []
    with _transaction(settings) as db:  # one snapshot: a feedback written meanwhile is whole
        cited: dict[int, list[tuple[str, str | None, str | None]]] = {}
        for feedback_id, passage_id, article, section in db.execute(
            "SELECT feedback_id, passage_id, article, section FROM feedback_passage "
            "ORDER BY feedback_id, position"
        ):
            cited.setdefault(feedback_id, []).append((passage_id, article, section))
        feedback = db.execute(
            "SELECT id, created_at, helpful, question, answer, comment, api_key "
            "FROM feedback ORDER BY id"
        ).fetchall()
    rows = []
    for feedback_id, created_at, helpful, question, answer, comment, api_key in feedback:
        passages = cited.get(feedback_id, [])
        values = (
            feedback_id,
            created_at,
            bool(helpful),
            question,
            answer,
            comment,
            [p for p, _, _ in passages],
            [a or UNKNOWN for _, a, _ in passages],
            [s or UNKNOWN for _, _, s in passages],
            api_key,
        )
        rows.append(dict(zip(_COLUMNS, values, strict=True)))
    return rows


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _spreadsheet_safe(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


_writers: dict[tuple[Path | str, int], threading.BoundedSemaphore] = {}


def _where(settings: Settings) -> str:
    """The feedback database as messages name it (never the URL: it may hold a password)."""
    return "in PostgreSQL" if settings.database_url else str(settings.feedback_db)


@contextmanager
def _writer_slot(settings: Settings) -> Iterator[None]:
    """One of this process's ``feedback_max_writers`` places to write; refused when all are taken.

    SQLite lets one writer in at a time, so more waiting in one process would
    only hold more of the web server's threads while the database is locked;
    PostgreSQL too holds a writer on a locked table, and each one a connection.
    """
    key = (settings.database_url or settings.feedback_db, settings.feedback_max_writers)
    with _SETUP:
        slots = _writers.setdefault(key, threading.BoundedSemaphore(key[1]))
    if not slots.acquire(blocking=False):
        raise RagError(
            f"the feedback database {_where(settings)} is busy "
            f"({settings.feedback_max_writers} feedback writes are waiting); try again"
        )
    try:
        yield
    finally:
        slots.release()


@contextmanager
def _transaction(settings: Settings, *, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A transaction on this thread's connection, committed when the block ends."""
    if settings.database_url:
        with _postgres_transaction(settings, write=write) as db:
            yield db  # type: ignore[misc]
        return
    db = _connection(settings)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(settings.feedback_busy_timeout_seconds * 1000)}")
        # IMMEDIATE takes the write lock up front, so a busy database is waited for
        # rather than failing when a read lock cannot be upgraded.
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise RagError(
                f"the feedback database {settings.feedback_db} is busy (another writer held it "
                f"over {settings.feedback_busy_timeout_seconds:g} s); try again"
            ) from None
        raise RagError(f"the feedback database {settings.feedback_db} failed: {exc}") from None
    except sqlite3.Error as exc:
        raise RagError(f"the feedback database {settings.feedback_db} failed: {exc}") from None


class _Postgres:
    """A PostgreSQL connection that runs the SQLite-style SQL of this module (``?`` as ``%s``)."""

    def __init__(self, connection: object) -> None:
        self._connection = connection

    def execute(self, sql: str, params: tuple | list = ()):
        return self._connection.execute(sql.replace("?", "%s"), params)  # type: ignore[attr-defined]

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        with self._connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.executemany(sql.replace("?", "%s"), rows)


@contextmanager
def _postgres_transaction(settings: Settings, *, write: bool) -> Iterator[_Postgres]:
    """A transaction on a pooled connection; a write gives up after the busy timeout.

    ``lock_timeout`` bounds the wait for a table another session has locked and
    ``statement_timeout`` a write the server is slow to finish; both end the
    transaction (nothing half-stored) and say to try again.
    """
    import psycopg
    from psycopg_pool import PoolTimeout

    from rag.dbpool import shared_pool

    wait = settings.feedback_busy_timeout_seconds
    busy = RagError(
        f"the feedback database in PostgreSQL is busy (a write waited over {wait:g} s); try again"
    )
    try:
        pool = shared_pool(settings.database_url, POSTGRES_COMPONENT, _POSTGRES_MIGRATIONS)
        with pool.connection(timeout=wait) as connection:
            milliseconds = max(1, int(wait * 1000))
            connection.execute(f"SET LOCAL lock_timeout = {milliseconds}")
            if write:
                connection.execute(f"SET LOCAL statement_timeout = {milliseconds}")
            yield _Postgres(connection)  # committed as the pool takes the connection back
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled, PoolTimeout):
        raise busy from None
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RagError(f"the feedback database in PostgreSQL failed: {reason}") from None


def _connection(settings: Settings) -> sqlite3.Connection:
    """This thread's connection to the feedback database, created and migrated when needed.

    Connections are kept per thread: closing the last connection to a WAL
    database checkpoints it, which cost more than the write itself. A database
    file replaced or deleted since is noticed by its inode and reopened.
    """
    path = settings.feedback_db
    opened = _open.by_path
    try:
        private_folder(path.parent)
        if path in opened:
            db, identity = opened[path]
            if identity is not None and _identity(path) == identity:
                return db
            del opened[path]
            db.close()
        # isolation_level=None: transactions are begun explicitly, so BEGIN IMMEDIATE
        # takes the write lock up front and a busy database is waited for, not failed.
        private_file(path)  # SQLite gives its -wal and -shm files the same mode
        db = sqlite3.connect(
            path,
            timeout=settings.feedback_busy_timeout_seconds,
            isolation_level=None,
            check_same_thread=True,
        )
    except (OSError, sqlite3.Error) as exc:
        raise RagError(f"cannot open the feedback database {path}: {exc}") from None
    try:
        # One thread at a time sets a new database up: switching it to WAL needs it to
        # itself, and SQLite reports "locked" at once rather than wait in that case.
        with _SETUP:
            _wal(db)
            _migrate(db, path)
        # In WAL mode NORMAL survives a crash of the process; only a power cut can
        # lose the last few feedbacks, which is worth the fsync saved on each one.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        opened[path] = (db, _identity(path))
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise RagError(f"the feedback database {path} is busy; try again") from None
        if isinstance(exc, sqlite3.DatabaseError):
            raise RagError(f"the feedback database {path} is unusable: {exc}") from None
        raise
    return db


_SETUP = threading.Lock()


def _wal(db: sqlite3.Connection) -> None:
    """Switch to WAL, retrying while another process holds the new database (first use)."""
    for attempt in range(100):
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _migrate(db: sqlite3.Connection, path: object) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RagError(
                f"the feedback database {path} has schema version {version} but this version "
                f"of rag reads up to {SCHEMA_VERSION}; upgrade rag or use another data folder"
            )
        for step in _MIGRATIONS[version:]:
            for statement in _statements(step):
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """The statements of a migration step (``executescript`` would commit mid-transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]
