"""Web app: `create_app(settings)` builds the FastAPI app; the index loads once in `lifespan`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from rag.embedding import Embedder
from rag.errors import RagError
from rag.index import Index, load_index
from rag.settings import Settings


class Engine:
    """The loaded model and index shared by all requests, or why there is none."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder: Embedder | None = None
        self.index: Index | None = None
        self.error: str | None = None

    def load(self) -> None:
        try:
            self.embedder = self.embedder or Embedder(self.settings.model)
            self.index = load_index(self.settings, self.embedder)
            self.error = None
        except RagError as exc:
            self.error = str(exc)


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings)
        engine.load()
        app.state.engine = engine
        yield

    app = FastAPI(title="AI career answers", lifespan=lifespan)

    @app.get("/api/health")
    def health(engine: EngineDep) -> JSONResponse:
        if engine.index is None:
            return JSONResponse({"status": "unavailable", "reason": engine.error}, status_code=503)
        counts = engine.index.manifest["counts"]
        return JSONResponse(
            {
                "status": "ok",
                "articles": counts["articles"],
                "passages": counts["passages"],
                "model": engine.index.model,
                "index_built_at": engine.index.built_at,
            }
        )

    return app


def app_from_env() -> FastAPI:
    """The app with settings from the environment (what `rag serve` runs in each worker)."""
    return create_app(Settings.from_env())
