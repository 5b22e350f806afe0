"""Settings: the one object built at the edge (CLI, app factory) and passed to every stage."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from rag.errors import SettingsError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
INDEX_KINDS = ("flat", "hnsw", "auto")
CHAT_MODES = ("public", "keys", "off")


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline, the CLI and the web app can be told.

    Every field can also be set from the environment as ``RAG_<FIELD>``,
    e.g. ``RAG_INDEX_DIR=/srv/index``.
    """

    corpus_dir: Path = Path("corpus")
    index_dir: Path = Path("index")
    data_dir: Path = Path("data")
    # A sentence-transformers model: the packaged all-MiniLM-L6-v2 by default,
    # or any local model folder.
    model: str = DEFAULT_MODEL
    # Chunking, in words: passages aim for `chunk_words`, never exceed
    # `chunk_max_words` unless one sentence does, and repeat
    # `chunk_overlap_sentences` sentences when a long section is split.
    chunk_words: int = 160
    chunk_max_words: int = 200
    chunk_overlap_sentences: int = 1
    # Which FAISS index to build: exact inner product ("flat"), "hnsw", or "auto":
    # HNSW for an index (passages or sentences) of `hnsw_from_vectors` vectors or more:
    # there a flat search costs ~3 ms a question on one core (benchmarks/README.md).
    index_kind: str = "auto"
    hnsw_from_vectors: int = 20_000
    top_k: int = 5
    # Limits on one corpus file, checked before it is read whole, parsed or embedded.
    max_file_bytes: int = 20_000_000
    max_sections_per_file: int = 5_000
    max_passages_per_file: int = 20_000
    # Web limits.
    max_body_bytes: int = 65_536
    max_concurrency: int = 8
    max_queue: int = 64
    queue_timeout_seconds: float = 1.0
    rate_limit_per_minute: int = 0
    # Requests a minute each API key may make (0: no limit), counted over the last 60 s.
    key_rate_limit_per_minute: int = 600
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    # Slow or stalled clients: a connection must send a whole request head within
    # `header_timeout_seconds` of opening (or of the previous response), and a request
    # its whole body within `body_timeout_seconds` (408); both are closed otherwise.
    header_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 10.0
    # Open connections one client address may hold, per worker (0: no cap).
    max_connections_per_client: int = 64
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or "*");
    # none by default: the client is the connecting address.
    trusted_proxies: tuple[str, ...] = field(default_factory=tuple)
    # Host header values this server answers to ("*": any), against DNS rebinding.
    trusted_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    # Who may use the chat page: "public" (a per-client rate limit and a signed token the
    # page embeds), "keys" (the page asks for an API key) or "off" (no chat).
    chat: str = "public"
    # Requests a minute each client address may make to the chat's routes, per worker.
    chat_rate_limit_per_minute: int = 60
    # How long a chat page's token is accepted after the page was served.
    chat_token_seconds: int = 3600
    # Bytes of feedback one client address may send a day (UTC), per worker (0: no cap).
    feedback_bytes_per_client_per_day: int = 262_144
    # How often (seconds) a running server looks for a rebuilt index.
    reload_check_seconds: float = 1.0
    # Feedback: how long (seconds) a write waits for another writer to finish, and how many
    # writes of one process may be in progress (writing or waiting) at once; one more is
    # refused at once. Both keep a locked database from holding up the server's threads.
    feedback_busy_timeout_seconds: float = 2.0
    feedback_max_writers: int = 8
    # PostgreSQL (with pgvector) shared by every replica, e.g. postgresql://user@db/rag.
    # Empty (the default): everything stays in files beside the server.
    database_url: str = ""
    # With a database: how long (seconds) a superseded index generation is kept for replicas
    # still serving it before it is dropped (a replica's own generation is never dropped).
    generation_grace_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.chunk_words < 20 or self.chunk_max_words < self.chunk_words:
            raise SettingsError(
                f"chunk_words must be at least 20 and at most chunk_max_words "
                f"(got {self.chunk_words} and {self.chunk_max_words})"
            )
        if self.chunk_overlap_sentences < 0:
            raise SettingsError("chunk_overlap_sentences must be 0 or more")
        if self.index_kind not in INDEX_KINDS:
            raise SettingsError(
                f"index_kind must be one of {', '.join(INDEX_KINDS)} (got {self.index_kind!r})"
            )
        if not 1 <= self.top_k <= 20:
            raise SettingsError(f"top_k must be between 1 and 20 (got {self.top_k})")
        if min(self.max_file_bytes, self.max_sections_per_file, self.max_passages_per_file) < 1:
            raise SettingsError(
                "max_file_bytes, max_sections_per_file and max_passages_per_file must be at least 1"
            )
        if self.max_concurrency < 1 or self.max_queue < 0:
            raise SettingsError("max_concurrency must be at least 1 and max_queue at least 0")
        if self.max_body_bytes < 1024:
            raise SettingsError("max_body_bytes must be at least 1024")
        if self.rate_limit_per_minute < 0:
            raise SettingsError("rate_limit_per_minute must be 0 (off) or more")
        if self.key_rate_limit_per_minute < 0:
            raise SettingsError("key_rate_limit_per_minute must be 0 (off) or more")
        if not 0 < self.feedback_busy_timeout_seconds <= 600:
            raise SettingsError(
                f"feedback_busy_timeout_seconds must be more than 0 and at most 600 "
                f"(got {self.feedback_busy_timeout_seconds})"
            )
        if self.feedback_max_writers < 1:
            raise SettingsError(
                f"feedback_max_writers must be at least 1 (got {self.feedback_max_writers})"
            )
        if self.header_timeout_seconds <= 0 or self.body_timeout_seconds <= 0:
            raise SettingsError("header_timeout_seconds and body_timeout_seconds must be above 0")
        if self.max_connections_per_client < 0:
            raise SettingsError("max_connections_per_client must be 0 (no cap) or more")
        if not self.trusted_hosts:
            raise SettingsError('trusted_hosts must name at least one host (or "*" for any)')
        if self.chat not in CHAT_MODES:
            raise SettingsError(f"chat must be one of {', '.join(CHAT_MODES)} (got {self.chat!r})")
        if self.chat_rate_limit_per_minute < 1:
            raise SettingsError("chat_rate_limit_per_minute must be at least 1")
        if self.chat_token_seconds < 60:
            raise SettingsError("chat_token_seconds must be at least 60")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise SettingsError(
                "database_url must be a postgresql:// URL (or empty for files beside the server)"
            )
        if self.generation_grace_seconds < 0:
            raise SettingsError("generation_grace_seconds must be 0 or more")
        if self.feedback_bytes_per_client_per_day < 0:
            raise SettingsError("feedback_bytes_per_client_per_day must be 0 (no cap) or more")

    @property
    def model_cache_dir(self) -> Path:
        """Where the ONNX copy of the model for fast question encoding is kept."""
        return self.index_dir.with_name(self.index_dir.name + ".builds") / "models"

    @property
    def feedback_db(self) -> Path:
        return self.data_dir / "feedback.sqlite3"

    @property
    def chat_secret_file(self) -> Path:
        """The key the chat's tokens are signed with, shared by every worker."""
        return self.data_dir / "chat-secret"

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``RAG_*`` variables, then explicit overrides (``None`` is ignored)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(f"RAG_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _convert(name: str, kind: object, raw: str) -> object:
    kind = str(kind)
    try:
        if kind == "Path":
            return Path(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(f"RAG_{name.upper()} must be a {kind}, got {raw!r}") from None
    return raw
