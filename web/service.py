"""Web service: what the API and the page both do (ask, store feedback) and how they fail.

The JSON routes of ``/api`` and the chat's ``/chat/api`` call these same
functions and share one error format (`JSONErrorRoute`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from rag.answering import Answer, answer_question
from rag.errors import InputError, RagError
from rag.feedback import Feedback, record_feedback
from rag.retrieval import passage_filter
from web.engine import Engine
from web.schema import AnswerRequest, FeedbackRequest

log = logging.getLogger("rag.web")


def ask(engine: Engine, request: AnswerRequest) -> Answer:
    """Answer ``request`` with the current index: the one function the API and the page share."""
    index, embedder = engine.current()
    allowed = passage_filter(
        index,
        articles=request.articles,
        published_after=request.published_after,
        published_before=request.published_before,
    )
    return answer_question(
        index,
        embedder,
        request.question,
        top_k=request.top_k,
        history=request.history,
        allowed=allowed,
        explain=request.explain,
    )


def store_feedback(engine: Engine, request: FeedbackRequest, api_key: str | None) -> int:
    """Record ``request`` with each passage's article and section from the index; its id.

    The API and the page share it. An id the loaded index does not hold is an
    `InputError` naming the field (``passage_ids.N``).
    """
    index, _ = engine.current()
    by_id = {p.id: p for p in index.passages}
    passages = []
    for n, passage_id in enumerate(request.passage_ids):
        if passage_id not in by_id:
            raise InputError(
                f"passage_ids.{n}: no passage {passage_id!r} in the index; "
                "send the passage_id of each citation of the answer"
            )
        passages.append(by_id[passage_id])
    feedback = Feedback(
        question=request.question,
        answer=request.answer,
        passage_ids=tuple(request.passage_ids),
        helpful=request.helpful,
        comment=request.comment,
        articles=tuple(p.article_title for p in passages),
        sections=tuple(p.section_path for p in passages),
        api_key=api_key,
    )
    return record_feedback(engine.settings, feedback)


def describe(errors: list[Any]) -> list[dict[str, str]]:
    """Pydantic/FastAPI validation errors as ``{"field", "message"}`` a person can read."""
    described = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        field = ".".join(loc)
        message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            field, message = "body", f"is not valid JSON ({error.get('ctx', {}).get('error')})"
        elif error.get("type") == "string_pattern_mismatch" and field == "question":
            message = "is empty; type a question about AI careers"
        elif error.get("type") == "string_pattern_mismatch":
            message = "is empty"
        elif error.get("type") == "extra_forbidden":
            message = "is not a known field"
        elif not field:
            field, message = "body", 'must be a JSON object like {"question": "..."}'
        described.append({"field": field, "message": message})
    return described


def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = describe(list(exc.errors()))
    content_type = request.headers.get("content-type", "")
    if errors[0]["field"] == "body" and content_type and "json" not in content_type:
        detail = f"send the request as JSON (Content-Type: application/json), not {content_type}"
        return JSONResponse({"detail": detail, "errors": errors}, status_code=415)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    status = 400 if errors[0]["field"] == "body" else 422
    return JSONResponse({"detail": detail, "errors": errors}, status_code=status)


def input_rejected(request: Request, exc: InputError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


def unavailable(request: Request, exc: RagError) -> JSONResponse:
    log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "the server cannot do this right now; try again later"}, 503)


def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; it has been logged"}, status_code=500)


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Any], JSONResponse]] = {
    RequestValidationError: validation_failed,
    InputError: input_rejected,
    RagError: unavailable,  # after InputError, its subclass: e.g. the feedback database failed
    Exception: unexpected,
}


class JSONErrorRoute(APIRoute):
    """Turns a route's errors into JSON bodies with the handlers above.

    The handlers live with the routes they serve (not in `create_app`) so the
    API's error format is defined in one module.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handle(request)
            except HTTPException:  # Starlette's, so FastAPI's and the body-parsing 400 too
                raise
            except Exception as exc:
                kind = next(k for k in EXCEPTION_HANDLERS if isinstance(exc, k))
                return EXCEPTION_HANDLERS[kind](request, exc)

        return route_handler
