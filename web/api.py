"""Web API: the JSON routes, typed with pydantic models, over the answering stage."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Coroutine
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)
from starlette.exceptions import HTTPException

from rag.answering import MAX_QUESTION_CHARS, Answer, answer_question
from rag.errors import InputError, RagError
from rag.feedback import (
    MAX_ANSWER_CHARS,
    MAX_COMMENT_CHARS,
    MAX_FIELD_CHARS,
    MAX_PASSAGES,
    Feedback,
    record_feedback,
)
from rag.keys import keys_enabled
from rag.retrieval import passage_filter
from web.app import Engine, EngineDep
from web.auth import ApiKeyName, require_key

log = logging.getLogger("rag.web")

MAX_HISTORY = 10

# Schema and server agree: the length is of the text as sent, and "not blank" is a
# pattern, checked with Python's `re` (the models' regex_engine) whose \S is exactly
# what the answering stage treats as text; the trimming comes after both.
NOT_BLANK = r"\S"
Question = Annotated[
    str,
    StringConstraints(max_length=MAX_QUESTION_CHARS, pattern=NOT_BLANK),
    AfterValidator(str.strip),
]
EarlierQuestion = Annotated[str, StringConstraints(max_length=MAX_QUESTION_CHARS)]
ArticleReference = Annotated[str, StringConstraints(min_length=1, max_length=MAX_FIELD_CHARS)]


def _whole_number(value: object) -> object:
    """JSON's 5.0 is the integer 5 (as JSON Schema says); 5.5, "5" and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _day(value: object) -> object:
    """Only a ``YYYY-MM-DD`` string is a day: a number is not read as a Unix time."""
    if isinstance(value, date) or (
        isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)
    ):
        return value
    raise ValueError("must be a day as YYYY-MM-DD")


Day = Annotated[date, BeforeValidator(_day)]


class AnswerRequest(BaseModel):
    """A question, with the conversation's earlier questions and optional source filters."""

    model_config = ConfigDict(
        extra="forbid",
        regex_engine="python-re",
        json_schema_extra={
            "examples": [{"question": "What skills does an MLOps engineer need?", "top_k": 5}]
        },
    )

    question: Question = Field(
        description="The question: at most 1,000 characters, not only spaces; trimmed."
    )
    top_k: Annotated[int, BeforeValidator(_whole_number)] = Field(
        5, ge=1, le=20, strict=True, description="How many passages to retrieve and cite."
    )
    history: list[EarlierQuestion] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description="Earlier questions of the conversation, oldest first (for follow-ups).",
    )
    articles: list[ArticleReference] = Field(
        default_factory=list,
        max_length=50,
        description="Only cite these articles (URLs or slugs from `/api/articles`; "
        "an unknown one is a 400 naming it).",
    )
    published_after: Day | None = Field(None, description="Only articles published on or after.")
    published_before: Day | None = Field(None, description="Only articles published on or before.")
    explain: StrictBool = Field(
        False,
        description="For operators: add `explain` (the question analysis, the top candidates "
        "with their features and scores, the answer probability and threshold, and which "
        "stage decided). It never changes the answer.",
    )


class FeedbackRequest(BaseModel):
    """A reader's verdict on an answer, naming the passages it cited."""

    model_config = ConfigDict(
        extra="forbid",
        regex_engine="python-re",
        json_schema_extra={
            "examples": [
                {
                    "question": "What do AI engineers earn in Antarctica?",
                    "answer": "The articles don't say what AI engineers earn in Antarctica.",
                    "passage_ids": [],
                    "helpful": False,
                    "comment": "I wanted figures for Antarctica.",
                }
            ]
        },
    )

    question: Question = Field(description="The question that was answered.")
    answer: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_ANSWER_CHARS, pattern=NOT_BLANK)
    ] = Field(description="The answer text as shown.")
    passage_ids: list[
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_FIELD_CHARS)]
    ] = Field(
        max_length=MAX_PASSAGES,
        description="The `passage_id` of each citation the answer quotes (may be empty); "
        "one the loaded index does not hold is a 400 naming it.",
    )
    helpful: StrictBool = Field(description="Whether the answer helped.")
    comment: Annotated[str, StringConstraints(max_length=MAX_COMMENT_CHARS)] = Field(
        "", description="Optional remark, at most 2,000 characters."
    )


class FeedbackOut(BaseModel):
    id: int = Field(description="The stored feedback's id.")


class CitationOut(BaseModel):
    n: int = Field(description="The number the answer cites it by, from 1.")
    passage_id: str
    article: str = Field(description="The article's title.")
    section: str = Field(description="The section path inside the article.")
    url: str = Field(description="Link to the section in the source article.")
    text: str = Field(description="The whole passage.")
    score: float
    highlights: list[tuple[int, int]] = Field(
        description="[start, end) character offsets in `text` of the sentences quoted."
    )


class QuoteOut(BaseModel):
    """One quoted unit of the answer, verbatim in its cited passage."""

    citation: int = Field(description="The `n` of the citation whose passage it quotes.")
    kind: Literal["sentence", "table_row", "list_item"]
    text: str = Field(description="The unit exactly as it stands in the passage's `text`.")
    span: tuple[int, int] = Field(
        description="[start, end) character offsets of `text` in the cited passage's `text`."
    )
    section: str = Field(description="The title of the section it stands under.")
    needs_section: bool = Field(
        description='The text leans on what comes before it ("This certification ..."): '
        "show it under `section`."
    )
    cells: list[tuple[str, str]] | None = Field(
        None,
        description="Table rows only: the row's cells as [header, value] pairs, in order "
        "(a header may be empty).",
    )
    intro: str | None = Field(
        None,
        description="List items only: the line that introduces the list (may be empty).",
    )


class AnswerOut(BaseModel):
    question: str
    answered: bool = Field(description="False when the articles don't cover the question.")
    answer: str = Field(
        description="The quotes as plain text with [n] markers, or why it was declined."
    )
    quotes: list[QuoteOut] = Field(
        description="The quoted units in reading order (empty when declined)."
    )
    citations: list[CitationOut]
    took_ms: float
    probability: float = Field(
        description="The answer model's calibrated probability that the articles answer it."
    )
    model: str = Field(description="The version of the answer model that answered.")
    explain: dict[str, Any] | None = Field(
        None, description="Present when the request asked for `explain`."
    )


class ArticleOut(BaseModel):
    title: str
    url: str
    slug: str
    published: date | None
    sections: int
    passages: int


class Health(BaseModel):
    status: str = Field(description="ok, or stale: serving an older index, see reason")
    articles: int
    passages: int
    model: str
    index_built_at: str
    reason: str | None = Field(None, description="Why the index on disk is not the one served")


class Unavailable(BaseModel):
    status: str
    reason: str | None


class Problem(BaseModel):
    """Why a request failed; `errors` names each invalid field when there are several."""

    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list)


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
    dependencies=keyed,
)
def answer(request: AnswerRequest, engine: EngineDep) -> dict:
    """Answer a question with quoted, cited sentences from the articles, or decline.

    Once API keys are on, send `Authorization: Bearer <key>`: 401 without a
    current key, 429 with `Retry-After` past the key's rate limit.
    """
    return ask(engine, request).to_dict()


@router.post("/feedback", status_code=201, response_model=FeedbackOut, responses=ERRORS)
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
