"""Web API: the JSON routes, typed with pydantic models, over the answering stage."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from web.app import EngineDep

router = APIRouter(prefix="/api")


@router.get("/health")
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
