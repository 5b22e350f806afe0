"""Errors: the small hierarchy every stage raises, with messages a user can act on."""

from __future__ import annotations


class RagError(Exception):
    """Base of every error the product raises on purpose."""


class SettingsError(RagError):
    """A setting has a value the product cannot work with."""


class CorpusError(RagError):
    """The corpus folder or one of its files cannot be read as articles."""


class IndexMissingError(RagError):
    """No built index where one was expected."""


class IndexMismatchError(RagError):
    """The index exists but cannot be used with these settings or this version."""


class InputError(RagError):
    """A question or request field is not acceptable."""


class StorageError(RagError):
    """A file or folder could not be read or written: no space, read-only, no permission."""
