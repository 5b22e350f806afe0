"""API keys: create, list and revoke the keys that open the JSON API, and check one per request.

Kept in ``data/keys.json``, or, with ``RAG_DATABASE_URL`` set, in the database every
replica shares (component ``api_keys``), where a revoked key stays as a row marked
revoked so that keys stay on.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rag.errors import InputError, RagError, StorageError
from rag.files import private_folder, storage_error, write_atomically
from rag.settings import Settings

KEYS_FILE = "keys.json"
KEY_PREFIX = "rag_"  # lets secret scanners and people recognise a leaked key
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FORMAT_VERSION = 1

# Per file: its identity when read, and its keys as {sha256 hex: name}.
_cache: dict[Path, tuple[tuple[int, int, int], dict[str, str]]] = {}

# In the database: how long a replica trusts what it read. A key revoked on one replica
# is refused by every other one within this time and one query.
DATABASE_CACHE_SECONDS = 0.5
POSTGRES_COMPONENT = "api_keys"
_POSTGRES_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE api_key (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL,
        sha256 text NOT NULL UNIQUE,
        created text NOT NULL,
        revoked text
    );
    CREATE UNIQUE INDEX api_key_current_name ON api_key (name) WHERE revoked IS NULL;
    """,
)
# Per database URL: when read (monotonic), whether any key was ever made, current hashes.
_read_from_database: dict[str, tuple[float, bool, dict[str, str]]] = {}
_database_lock = threading.Lock()


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: its name and when it was made; never the key itself."""

    name: str
    created: str


def keys_file(settings: Settings) -> Path:
    return settings.data_dir / KEYS_FILE


def keys_enabled(settings: Settings) -> bool:
    """Whether the API asks for a key: from the first ``create_key`` on.

    Revoking every key leaves them on, refusing every request, rather than
    opening the API by surprise; `keys_off_hint` says how to turn keys off.
    """
    if settings.database_url:
        return _from_database(settings)[0]
    return keys_file(settings).exists()


def keys_off_hint(settings: Settings) -> str:
    """What an operator does to turn keys off (open the API) again."""
    if settings.database_url:
        return "run DELETE FROM api_key in the database to turn keys off"
    return f"delete {keys_file(settings)} to turn keys off"


def create_key(settings: Settings, name: str) -> str:
    """Make a key named ``name`` and return it (``rag_`` and 43 URL-safe characters); only
    its hash is kept, so this is the one chance to read it."""
    if not _NAME.fullmatch(name):
        raise InputError(
            f"a key name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (got {name!r})"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    if settings.database_url:
        _create_in_database(settings, name, key)
        return key
    with _locked(settings) as entries:
        if any(entry["name"] == name for entry in entries):
            raise InputError(f"a key named {name!r} already exists; revoke it or choose another")
        entries.append(
            {
                "name": name,
                "sha256": _digest(key),
                "created": _now(),
            }
        )
    return key


def list_keys(settings: Settings) -> list[ApiKey]:
    """Every key's name and creation time, oldest first."""
    if settings.database_url:
        with _database(settings) as db:
            rows = db.execute(
                "SELECT name, created FROM api_key WHERE revoked IS NULL ORDER BY id"
            ).fetchall()
        return [ApiKey(name, created) for name, created in rows]
    return [ApiKey(entry["name"], entry["created"]) for entry in _read(keys_file(settings))]


def revoke_key(settings: Settings, name: str) -> None:
    """Remove the key named ``name``; requests using it are refused from then on."""
    if settings.database_url:
        with _database(settings) as db:
            revoked = db.execute(
                "UPDATE api_key SET revoked = %s WHERE name = %s AND revoked IS NULL",
                (_now(), name),
            ).rowcount
        _read_from_database.pop(settings.database_url, None)
        if not revoked:
            raise InputError(f"no key named {name!r}; `rag keys list` shows the keys")
        return
    with _locked(settings) as entries:
        kept = [entry for entry in entries if entry["name"] != name]
        if len(kept) == len(entries):
            raise InputError(f"no key named {name!r}; `rag keys list` shows the keys")
        entries[:] = kept


def verify_key(settings: Settings, key: str) -> str | None:
    """The name of the key, or None when it is not a current key.

    Cheap enough for every request: the file is read again only when it changes,
    the database at most every ``DATABASE_CACHE_SECONDS``.
    """
    if not key or not key.startswith(KEY_PREFIX):
        return None
    digest = _digest(key)
    found = None
    url = settings.database_url
    hashes = _from_database(settings)[1] if url else _hashes(keys_file(settings))
    for stored, name in hashes.items():
        if hmac.compare_digest(stored, digest):
            found = name
    return found


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _create_in_database(settings: Settings, name: str, key: str) -> None:
    import psycopg

    taken = InputError(f"a key named {name!r} already exists; revoke it or choose another")
    try:
        with _database(settings) as db:
            if db.execute(
                "SELECT 1 FROM api_key WHERE name = %s AND revoked IS NULL", (name,)
            ).fetchone():
                raise taken
            db.execute(
                "INSERT INTO api_key (name, sha256, created) VALUES (%s, %s, %s)",
                (name, _digest(key), _now()),
            )
    except psycopg.errors.UniqueViolation:  # made at the same moment by another operator
        raise taken from None
    _read_from_database.pop(settings.database_url, None)


def _from_database(settings: Settings) -> tuple[bool, dict[str, str]]:
    """Whether keys are on, and the current keys as {sha256 hex: name}, read at most every
    ``DATABASE_CACHE_SECONDS`` (a request does not wait on a query each time)."""
    url = settings.database_url
    cached = _read_from_database.get(url)
    if cached is not None and time.monotonic() - cached[0] < DATABASE_CACHE_SECONDS:
        return cached[1], cached[2]
    with _database_lock:  # one query for every thread whose cache ran out at once
        cached = _read_from_database.get(url)
        if cached is None or time.monotonic() - cached[0] >= DATABASE_CACHE_SECONDS:
            read_at = time.monotonic()
            with _database(settings) as db:
                rows = db.execute("SELECT sha256, name, revoked IS NULL FROM api_key").fetchall()
            current = {digest: name for digest, name, live in rows if live}
            cached = (read_at, bool(rows), current)
            _read_from_database[url] = cached
    return cached[1], cached[2]


@contextmanager
def _database(settings: Settings) -> Iterator[object]:
    """A transaction on a pooled connection to the keys' tables; failures are one line."""
    import psycopg
    from psycopg_pool import PoolTimeout

    from rag.dbpool import shared_pool

    try:
        pool = shared_pool(settings.database_url, POSTGRES_COMPONENT, _POSTGRES_MIGRATIONS)
        with pool.connection(timeout=5) as connection:
            connection.execute("SET LOCAL statement_timeout = 5000")
            yield connection
    except PoolTimeout:
        raise RagError(
            "the API keys in the database cannot be read: no connection free within 5 s"
        ) from None
    except psycopg.errors.UniqueViolation:
        raise
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RagError(f"the API keys in the database cannot be read: {reason}") from None


def _digest(key: str) -> str:
    # A key holds 256 random bits, so a plain hash cannot be brute-forced: no salt or KDF needed.
    return hashlib.sha256(key.encode()).hexdigest()


def _hashes(path: Path) -> dict[str, str]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    # The file is only ever replaced whole, so a new inode or mtime means new content.
    identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _cache.get(path)
    if cached is None or cached[0] != identity:
        cached = (identity, {entry["sha256"]: entry["name"] for entry in _read(path)})
        _cache[path] = cached
    return cached[1]


def _read(path: Path) -> list[dict[str, str]]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise RagError(f"the API keys file {path} is unreadable ({exc}); restore it") from None
    if not isinstance(stored, dict) or stored.get("format_version") != _FORMAT_VERSION:
        raise RagError(f"the API keys file {path} is not in a format this version of rag reads")
    return stored["keys"]


@contextmanager
def _locked(settings: Settings) -> Iterator[list[dict[str, str]]]:
    """The keys, to change in place; written back atomically when the block ends without error.

    A lock file serialises operators running `rag keys` at the same time.
    """
    path = keys_file(settings)
    try:
        private_folder(path.parent)
        lock = open(path.with_name(KEYS_FILE + ".lock"), "w")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise _storage(exc) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = _read(path)
        yield entries
        try:
            _write(path, {"format_version": _FORMAT_VERSION, "keys": entries})
        except OSError as exc:
            raise _storage(exc) from None


def _storage(exc: OSError) -> StorageError:
    return storage_error(exc, "no key was changed")


def _write(path: Path, content: dict) -> None:
    write_atomically(path, json.dumps(content, indent=1).encode(), mode=0o600)
