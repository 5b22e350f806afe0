"""PostgreSQL: the one database every replica shares when ``RAG_DATABASE_URL`` is set.

Connections and schema migrations live here; the stores that keep their data in the
database (the index, feedback, keys, the embedding cache) each own their tables and
migrations and call :func:`migrate` with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.errors import StorageError

# Every component's applied schema version, in one table.
_VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS rag_schema (
    component text PRIMARY KEY,
    version integer NOT NULL
)
"""


def connect(url: str, *, autocommit: bool = False):
    """A connection to ``url``, or one line saying why there is none."""
    import psycopg

    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StorageError(
            f"cannot connect to the database in RAG_DATABASE_URL: {reason}; "
            "check that PostgreSQL is running and the URL is right"
        ) from None


def migrate(connection, component: str, steps: Sequence[str]) -> int:
    """Apply ``component``'s migration steps the database has not seen yet, in order.

    Step ``i`` takes the component from version ``i`` to ``i + 1``; steps are never
    edited once shipped, only appended. An advisory lock serialises replicas that start
    at once, and the steps commit together with the new version, or not at all.
    Returns the version the component is at.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('rag_schema'))")
        connection.execute(_VERSIONS_TABLE)
        row = connection.execute(
            "SELECT version FROM rag_schema WHERE component = %s", (component,)
        ).fetchone()
        version = row[0] if row else 0
        if version > len(steps):
            raise StorageError(
                f"the database's {component} schema is version {version}, newer than this "
                f"release knows ({len(steps)}); upgrade rag on this machine"
            )
        for step in steps[version:]:
            connection.execute(step)
        connection.execute(
            "INSERT INTO rag_schema (component, version) VALUES (%s, %s) "
            "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
            (component, len(steps)),
        )
    return len(steps)
