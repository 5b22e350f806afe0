"""Database connections kept open: one small pool per process and database, schemas migrated once.

The stores that live in PostgreSQL when ``RAG_DATABASE_URL`` is set (feedback, API keys,
the embedding cache) take their connections here, so a web worker opens a connection
once rather than on every request.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Sequence

from rag.database import connect, migrate
from rag.errors import StorageError

MAX_CONNECTIONS = 16  # per process: feedback writers are capped below this (8 by default)

_pools: dict[tuple[int, str], object] = {}
_migrated: set[tuple[int, str, str]] = set()
_lock = threading.Lock()


def shared_pool(url: str, component: str, steps: Sequence[str]):
    """This process's pool of connections to ``url``, with ``component``'s tables migrated.

    A pool is made per process id: a forked web worker makes its own, since a pool's
    connections and threads do not survive a fork. An unreachable database is a
    one-line `StorageError`.
    """
    from psycopg_pool import ConnectionPool, PoolTimeout

    key = (os.getpid(), url)
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ConnectionPool(
                url,
                min_size=1,
                max_size=MAX_CONNECTIONS,
                open=False,
                kwargs={"connect_timeout": 10},
                check=ConnectionPool.check_connection,  # a server restart costs no request
                name="rag",
            )
            try:
                pool.open(wait=True, timeout=15)
            except PoolTimeout:
                pool.close()
                connect(url).close()  # raises the one line saying why, when it can tell
                raise StorageError(
                    "cannot connect to the database in RAG_DATABASE_URL within 15 s"
                ) from None
            _pools[key] = pool
        if (*key, component) not in _migrated:
            with pool.connection() as connection:
                migrate(connection, component, steps)
            _migrated.add((*key, component))
    return pool


def close_pool(url: str) -> None:
    """Close this process's connections to ``url`` (a server shutting down; a test's end)."""
    with _lock:
        pool = _pools.pop((os.getpid(), url), None)
        _migrated.difference_update({m for m in _migrated if m[:2] == (os.getpid(), url)})
    if pool is not None:
        pool.close()  # type: ignore[attr-defined]


@atexit.register
def _close_all() -> None:
    for (pid, _), pool in list(_pools.items()):
        if pid == os.getpid():
            pool.close()  # type: ignore[attr-defined]
