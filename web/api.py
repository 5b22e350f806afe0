"""Web API: the JSON routes under ``/api``, typed with the models of `web.schema`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from rag.keys import keys_enabled
from web.auth import ApiKeyName, require_key
from web.engine import EngineDep
from web.limits import ANSWERING, FEEDBACK
from web.schema import (
    AnswerOut,
    AnswerRequest,
    ArticleOut,
    FeedbackOut,
    FeedbackRequest,
    Health,
    Problem,
    Unavailable,
)
from web.service import JSONErrorRoute, ask, store_feedback

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Malformed JSON, an unknown article or passage id"},
    408: {"model": Problem, "description": "The body did not arrive in time"},
    413: {"model": Problem, "description": "The body is larger than the server accepts"},
    415: {"model": Problem, "description": "The body is not JSON"},
    422: {"model": Problem, "description": "A field is missing, of the wrong type or too long"},
    429: {
        "model": Problem,
        "description": "Past a rate limit or the day's feedback allowance; see Retry-After",
    },
    503: {"model": Problem, "description": "No usable index yet, or the server is busy"},
}
READ_ERRORS = {status: ERRORS[status] for status in (429, 503)}
# Documented on the keyed routes while API keys are on (see `openapi`).
KEY_ERRORS: dict[str, dict[str, Any]] = {
    "401": {"description": "No current API key; send `Authorization: Bearer <key>`"}
}

# Once an API key exists every route needs one (401 without, 429 past the key's rate
# limit) except /api/health, which stays open so load balancers can probe it.
router = APIRouter(prefix="/api", route_class=JSONErrorRoute, tags=["api"])
keyed = [Depends(require_key)]


@router.post(
    "/answer",
    response_model=AnswerOut,
    response_model_exclude_none=True,
    responses=ERRORS,
    dependencies=[ANSWERING, *keyed],
)
def answer(request: AnswerRequest, engine: EngineDep) -> dict:
    """Answer a question with quoted, cited sentences from the articles, or decline.

    Once API keys are on, send `Authorization: Bearer <key>`: 401 without a
    current key, 429 with `Retry-After` past the key's rate limit.
    """
    return ask(engine, request).to_dict()


@router.post(
    "/feedback",
    status_code=201,
    response_model=FeedbackOut,
    responses=ERRORS,
    dependencies=[FEEDBACK],
)
def feedback(request: FeedbackRequest, engine: EngineDep, api_key: ApiKeyName) -> dict:
    """Record whether an answer helped; 201 with its id once it is stored.

    `passage_ids` must be passages of the loaded index (400 naming the one that
    is not). API keys as for `/api/answer`.
    """
    return {"id": store_feedback(engine, request, api_key)}


@router.get("/articles", response_model=list[ArticleOut], responses=READ_ERRORS, dependencies=keyed)
def articles(engine: EngineDep) -> list[dict]:
    """The indexed articles, with their publication day and size (API keys as for answers)."""
    index, _ = engine.current()
    return [
        {
            "title": a.title,
            "url": a.url,
            "slug": a.slug,
            "published": a.published[:10] if a.published else None,
            "sections": a.sections,
            "passages": a.passages,
        }
        for a in index.articles
    ]


@router.get("/health", response_model=Health, responses={503: {"model": Unavailable}})
def health(engine: EngineDep) -> JSONResponse:
    """Whether an index is loaded, and what it holds; open without an API key, for probes.

    `stale` (still 200) means an older index is served: the one on disk cannot be
    read or loaded; `reason` says why.
    """
    status = engine.health()
    return JSONResponse(status, status_code=503 if status["status"] == "unavailable" else 200)


def openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: the document as the server behaves right now.

    While no API key exists the routes are open, so the document declares no
    security; once one does, the keyed routes declare the bearer scheme and
    their 401. Keys can be created while the server runs, so both documents are
    kept and the current one is served.
    """
    documents: dict[bool, dict[str, Any]] = {}

    def current() -> dict[str, Any]:
        keyed = keys_enabled(app.state.settings)
        if keyed not in documents:
            full = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            documents[True], documents[False] = _with_keys(full), _without_keys(full)
        return documents[keyed]

    return current


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for path in document["paths"].values() for op in path.values()]


def _with_keys(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    for operation in _operations(document):
        if "security" in operation:
            operation["responses"] |= copy.deepcopy(KEY_ERRORS)
    return document


def _without_keys(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    for operation in _operations(document):
        operation.pop("security", None)
    document.get("components", {}).pop("securitySchemes", None)
    return document
