"""Web engine: the model and the current index shared by all requests, swapped on a rebuild."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from rag.encoder import QuestionEncoder, index_encoder
from rag.errors import IndexMissingError, RagError
from rag.files import storage_error
from rag.index import Index, load_index, read_manifest
from rag.pgstore import Listener, prune
from rag.settings import Settings

log = logging.getLogger("rag.web")


class Engine:
    """The question encoder and the current index shared by all requests, or why there is none.

    Questions are encoded by the ONNX export each index build carries
    (`rag.encoder`): serving never imports PyTorch or sentence-transformers.

    A rebuilt index is noticed by `watch` (the index link or its manifest
    changed), loaded beside the current one and swapped in with one assignment:
    requests in flight keep the index they started with, and a new index that
    fails to load never replaces a good one. Whatever goes wrong while looking
    (a folder that cannot be entered, a damaged build) is logged, shown by
    `health` and looked at again on the next round.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder: QuestionEncoder | None = None
        self.index: Index | None = None
        self.error: str | None = "the index is loading"  # why nothing is served (public)
        self.problem: str | None = None  # why the index on disk is not the one served (public)
        self.checked = time.monotonic()  # when the watcher last finished a round
        self._attempted = 0.0  # when the watcher last tried to load
        self._seen: tuple[str, str] | None = None
        self._loaded: tuple[str, str] | None = None
        # With a database: the connection that hears of new generations and pins the one served.
        self.listener = Listener(settings) if settings.database_url else None
        self._pruned = 0.0

    def _signature(self) -> tuple[str, str]:
        """Which build the index link (or the database) names now; raises when unreadable."""
        if self.listener is not None:
            generation = self.listener.active()
            if generation is None:
                raise IndexMissingError(
                    "no index in the database (RAG_DATABASE_URL); run `rag index` to build it"
                )
            return "database", str(generation)
        manifest = read_manifest(self.settings.index_dir)
        return str(self.settings.index_dir.resolve()), manifest["built_at"]

    def load(self) -> bool:
        """Load (or reload) the index; returns whether a new one was swapped in."""
        try:
            signature: tuple[str, str] | None = self._signature()
        except (RagError, OSError):
            signature = None  # load_index below says why
        if signature is not None and signature == self._loaded and self.index is not None:
            self._seen, self.problem = signature, None  # readable again, and unchanged
            return False
        try:
            index = load_index(self.settings)
            encoder = index_encoder(self.settings, index, reuse=self.embedder)
        except Exception as exc:  # any unusable index must leave the app serving, not crash it
            reason = (
                str(exc)
                if isinstance(exc, RagError)
                else (
                    f"the index at {self.settings.index_dir} could not be loaded "
                    f"({type(exc).__name__}); run `rag index` to rebuild"
                )
            )
            self._seen = signature
            self.problem = public_reason(reason)
            if self.index is None:
                self.error = self.problem
            log.error("index not loaded: %s", reason)
            return False
        self.embedder = encoder  # the same model (load_index checks): either fits either index
        if self.listener is not None:
            signature = ("database", index.generation)
            try:
                self.listener.pin(int(index.generation))
            except RagError as exc:  # it is served all the same; pruning waits its grace
                log.error("%s", exc)
        self.index, self.error, self.problem = index, None, None
        self._seen = self._loaded = signature
        log.info("index loaded: generation %s (%s)", index.generation, index.built_at)
        return True

    def check(self) -> None:
        """One round of the watcher: load the index if the link or its manifest changed."""
        try:
            signature = self._signature()
        except (RagError, OSError) as exc:
            signature = None
            reason = str(exc) if isinstance(exc, RagError) else str(storage_error(exc, "retrying"))
            if self.index is not None and self.problem is None:
                log.error("the index cannot be read: %s", reason)
            self.problem = public_reason(reason)
        # A build that failed to load is tried again now and then: the cause may be brief.
        retry = max(5.0, 5 * self.settings.reload_check_seconds)
        again = self.problem is not None and time.monotonic() - self._attempted >= retry
        readable_again = self.problem is not None and signature == self._loaded
        if signature is not None and (signature != self._seen or again or readable_again):
            self._attempted = time.monotonic()
            self.load()
        self.checked = time.monotonic()
        if self.listener is not None and self.checked - self._pruned >= self._prune_every:
            self._pruned = self.checked
            prune(self.settings)  # any replica may drop generations past their grace

    @property
    def _prune_every(self) -> float:
        return max(1.0, self.settings.generation_grace_seconds / 4)

    def current(self) -> tuple[Index, QuestionEncoder]:
        """The index and model to answer with; 503 while there is no usable index."""
        index, embedder = self.index, self.embedder
        if index is None or embedder is None:
            raise HTTPException(status_code=503, detail=self.error or "no index loaded")
        return index, embedder

    def health(self) -> dict:
        """What `/api/health` says: ok, stale (serving an older index, and why) or unavailable."""
        index = self.index
        if index is None:
            return {"status": "unavailable", "reason": self.error or "no index loaded"}
        problem = self.problem
        silent = time.monotonic() - self.checked
        if problem is None and silent > max(30.0, 10 * self.settings.reload_check_seconds):
            problem = f"the index has not been checked for a rebuild for {silent:.0f} s"
        counts = index.manifest["counts"]
        return {
            "status": "stale" if problem else "ok",
            "articles": counts["articles"],
            "passages": counts["passages"],
            "model": index.model,
            "index_built_at": index.built_at,
            "generation": index.generation,
            **({"reason": problem} if problem else {}),
        }

    async def watch(self) -> None:
        """Poll for a rebuilt index and swap it in without a restart; never stops on an error.

        With a database the wait ends early when a build announces its generation (NOTIFY),
        so replicas move within a moment; polling remains for a notice that was missed.
        """
        while True:
            try:
                if self.listener is None:
                    await asyncio.sleep(self.settings.reload_check_seconds)
                else:
                    await asyncio.to_thread(self.listener.wait, self.settings.reload_check_seconds)
            except Exception as exc:  # the database is away: poll again a round later
                log.error("waiting for a new index failed: %s", exc)
                await asyncio.sleep(self.settings.reload_check_seconds)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # keep watching: the next round may well be fine
                log.exception("index check failed; retrying")

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/]+/)*([^\s/;,()']+)")


def public_reason(reason: str) -> str:
    """A reason without the server's folders: absolute paths shrink to their last part.

    >>> public_reason("no index at /srv/rag/index; run `rag index` to build it")
    'no index at index; run `rag index` to build it'
    """
    return _ABSOLUTE_PATH.sub(r"\1", reason)


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]
