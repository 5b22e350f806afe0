"""Web app: `create_app(settings)` builds the FastAPI app; the index loads once in `lifespan`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.staticfiles import StaticFiles

from rag.embedding import Embedder
from rag.errors import RagError
from rag.index import Index, load_index, read_manifest
from rag.retrieval import use_one_thread
from rag.settings import Settings

log = logging.getLogger("rag.web")
WEB_DIR = Path(__file__).parent


class Engine:
    """The model and the current index shared by all requests, or why there is no index.

    A rebuilt index is noticed by `watch` (the index link or its manifest
    changed), loaded beside the current one and swapped in with one assignment:
    requests in flight keep the index they started with, and a new index that
    fails to load never replaces a good one.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder: Embedder | None = None
        self.index: Index | None = None
        self.error: str | None = "the index is loading"
        self._seen: tuple[str, str] | None = None

    def _signature(self) -> tuple[str, str] | None:
        try:
            manifest = read_manifest(self.settings.index_dir)
        except RagError:
            return None
        return str(self.settings.index_dir.resolve()), str(manifest.get("built_at"))

    def load(self) -> bool:
        """Load (or reload) the index; returns whether a new one was swapped in."""
        signature = self._signature()
        if signature is not None and signature == self._seen and self.index is not None:
            return False
        try:
            self.embedder = self.embedder or Embedder(
                self.settings.model, onnx_dir=self.settings.model_cache_dir
            )
            index = load_index(self.settings, self.embedder)
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
            if self.index is None:
                self.error = reason
            log.error("index not loaded: %s", reason)
            return False
        self.index, self.error, self._seen = index, None, signature
        log.info("index loaded from %s (%s)", index.path, index.built_at)
        return True

    def current(self) -> tuple[Index, Embedder]:
        """The index and model to answer with; 503 while there is no usable index."""
        index, embedder = self.index, self.embedder
        if index is None or embedder is None:
            raise HTTPException(status_code=503, detail=self.error or "no index loaded")
        return index, embedder

    async def watch(self) -> None:
        """Poll for a rebuilt index and swap it in without a restart."""
        while True:
            await asyncio.sleep(self.settings.reload_check_seconds)
            if self._signature() != self._seen:
                try:
                    await asyncio.to_thread(self.load)
                except Exception:  # keep watching: the next rebuild may well be good
                    log.exception("index reload failed")


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def create_app(settings: Settings) -> FastAPI:
    """The chat page and JSON API over the index named in ``settings``."""
    from web import api, auth, docs, limits, pages, security

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        use_one_thread()
        engine = Engine(settings)
        await asyncio.to_thread(engine.load)
        app.state.engine = engine
        watcher = asyncio.create_task(engine.watch())
        yield
        watcher.cancel()
        with suppress(asyncio.CancelledError):
            await watcher

    app = FastAPI(
        title="AI career answers",
        description="Answers about AI careers quoted word for word from the articles, cited.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # web.docs serves /docs from installed files; no ReDoc
        redoc_url=None,
    )
    app.state.settings = settings
    limits.install(app, settings)
    auth.install(app, settings)
    app.include_router(api.router)
    app.include_router(pages.router)
    docs.install(app)
    security.install(app)  # last: outermost, so every response carries the headers
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
    return app


def app_from_env() -> FastAPI:
    """The app with settings from the environment (what `rag serve` runs in each worker)."""
    return create_app(Settings.from_env())
