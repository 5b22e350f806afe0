"""Files: write a file whole or not at all, and keep the operator's data private."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from rag.errors import StorageError


def write_atomically(path: Path, content: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``content``: readers see the old file or the new one, never half.

    The temporary file sits beside the target, named ``.<name>.<random>.part``
    (a name the corpus reader ignores), and is synced before the rename.
    """
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".part", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write does not say where
        raise


def private_folder(path: Path) -> None:
    """Create ``path`` (and its parents) readable by its owner only, or make it so (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)


def private_file(path: Path) -> None:
    """Create ``path`` empty if missing, readable and writable by its owner only (0600)."""
    descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        if os.fstat(descriptor).st_mode & 0o077:
            os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


def storage_error(exc: OSError, consequence: str) -> StorageError:
    """One line for a failed read or write: the path, the cause and what it left behind.

    >>> storage_error(OSError(28, "No space left on device", "index.builds"), "nothing changed")
    StorageError('index.builds: no space left on device; nothing changed')
    """
    causes = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file too large for this file system or limit",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }
    cause = causes.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
    where = exc.filename if exc.filename is not None else "a file"
    return StorageError(f"{where}: {cause}; {consequence}")
