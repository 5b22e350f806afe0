"""Web app: `create_app(settings)` builds the FastAPI app; the index loads once in `lifespan`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from rag.retrieval import use_one_thread
from rag.settings import Settings
from web import api, auth, docs, limits, pages, security
from web.engine import Engine

WEB_DIR = Path(__file__).parent


def create_app(settings: Settings) -> FastAPI:
    """The chat page and JSON API over the index named in ``settings``."""

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
        engine.close()

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
    app.openapi = api.openapi(app)  # type: ignore[method-assign]
    app.include_router(pages.router)
    docs.install(app)
    security.install(app)  # last: outermost, so every response carries the headers
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
    return app


def app_from_env() -> FastAPI:
    """The app with settings from the environment (what `rag serve` runs in each worker)."""
    return create_app(Settings.from_env())
