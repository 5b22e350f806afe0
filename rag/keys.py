"""API keys: create, list and revoke the keys that open the JSON API, and check one per request."""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import re
import secrets
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
    opening the API by surprise; delete ``data/keys.json`` to turn keys off.
    """
    return keys_file(settings).exists()


def create_key(settings: Settings, name: str) -> str:
    """Make a key named ``name`` and return it (``rag_`` and 43 URL-safe characters); only
    its hash is kept, so this is the one chance to read it."""
    if not _NAME.fullmatch(name):
        raise InputError(
            f"a key name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (got {name!r})"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with _locked(settings) as entries:
        if any(entry["name"] == name for entry in entries):
            raise InputError(f"a key named {name!r} already exists; revoke it or choose another")
        entries.append(
            {
                "name": name,
                "sha256": _digest(key),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
    return key


def list_keys(settings: Settings) -> list[ApiKey]:
    """Every key's name and creation time, oldest first."""
    return [ApiKey(entry["name"], entry["created"]) for entry in _read(keys_file(settings))]


def revoke_key(settings: Settings, name: str) -> None:
    """Remove the key named ``name``; requests using it are refused from then on."""
    with _locked(settings) as entries:
        kept = [entry for entry in entries if entry["name"] != name]
        if len(kept) == len(entries):
            raise InputError(f"no key named {name!r}; `rag keys list` shows the keys")
        entries[:] = kept


def verify_key(settings: Settings, key: str) -> str | None:
    """The name of the key, or None when it is not a current key.

    Cheap enough for every request: the file is read again only when it changes.
    """
    if not key or not key.startswith(KEY_PREFIX):
        return None
    digest = _digest(key)
    found = None
    for stored, name in _hashes(keys_file(settings)).items():
        if hmac.compare_digest(stored, digest):
            found = name
    return found


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
