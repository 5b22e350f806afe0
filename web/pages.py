"""Web pages: the chat, rendered with Jinja2, working with and without JavaScript.

The page asks its own routes under ``/chat/api`` (the same handlers and
models as ``/api``). Who may use them is ``RAG_CHAT`` (`web.auth.check_chat`):
"public" needs the signed token the page embeds, "keys" an API key typed into
the page, "off" serves no chat. Every post here must come from this site
(`web.auth.same_origin`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from pydantic import ValidationError

from rag.answering import MAX_QUESTION_CHARS, Answer, Citation
from rag.errors import InputError
from rag.ingest import is_web_link
from web.api import (
    MAX_HISTORY,
    AnswerOut,
    AnswerRequest,
    FeedbackOut,
    FeedbackRequest,
    JSONErrorRoute,
    ask,
    describe,
    store_feedback,
)
from web.app import WEB_DIR, Engine, EngineDep
from web.auth import ChatKeyName, chat_on, check_chat, same_origin

EXAMPLES = (
    "How much do AI engineers earn?",
    "Which skills does an MLOps engineer need?",
    "Are certifications worth it for a career in AI?",
    "How can a software developer move into machine learning?",
)

# Autoescape everything: questions and passages are shown as text, never as markup.
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(WEB_DIR / "templates"), autoescape=True)
)
router = APIRouter(include_in_schema=False, dependencies=[Depends(chat_on)])
chat_api = APIRouter(prefix="/chat/api", route_class=JSONErrorRoute)
from_this_site = [Depends(same_origin)]


def marked(citation: Citation) -> list[tuple[str, bool]]:
    """The passage cut into ``(text, is_quoted)`` pieces at its highlight offsets.

    >>> marked(Citation(1, "p", "A", "S", "u", "One. Two.", 1.0, ((5, 9),)))
    [('One. ', False), ('Two.', True)]
    """
    pieces, cursor = [], 0
    for start, end in citation.highlights:
        if start > cursor:
            pieces.append((citation.text[cursor:start], False))
        pieces.append((citation.text[start:end], True))
        cursor = end
    if cursor < len(citation.text):
        pieces.append((citation.text[cursor:], False))
    return pieces


def quotes(answer: Answer) -> list[tuple[str, Citation]]:
    """The answer's quoted sentences in answer order, each with the citation it comes from."""
    return [(c.text[start:end], c) for c in answer.citations for start, end in c.highlights]


# web_link: only http(s) and relative URLs become links; an index built before ingest
# refused others (javascript:, data:) shows them as text.
templates.env.globals.update(
    marked=marked, quotes=quotes, max_chars=MAX_QUESTION_CHARS, web_link=is_web_link
)


def _page(
    request: Request, engine: Engine, status_code: int = 200, **context: object
) -> HTMLResponse:
    # The article picker lists the loaded index's articles (none while it loads).
    articles = engine.index.articles if engine.index is not None else ()
    tokens = request.app.state.chat_tokens
    context = {
        "chat_token": tokens.issue() if tokens is not None else None,
        "ask_key": request.app.state.settings.chat == "keys",
        "examples": EXAMPLES,
        "history": [],
        "answer": None,
        "error": None,
        "articles": articles,
        "chosen": [],
    } | context
    return templates.TemplateResponse(request, "chat.html", context, status_code=status_code)


@router.get("/", response_class=HTMLResponse)
def chat(request: Request, engine: EngineDep) -> HTMLResponse:
    """The empty chat with example questions."""
    return _page(request, engine)


@router.post("/", response_class=HTMLResponse, dependencies=from_this_site)
def chat_form(
    request: Request,
    engine: EngineDep,
    question: Annotated[str, Form()] = "",
    history: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies form defaults
    articles: Annotated[list[str], Form()] = [],  # noqa: B006
    chat_token: Annotated[str, Form()] = "",
    api_key: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """The chat without JavaScript: the form posts here and gets the page back, answered."""
    history = [h for h in history if h.strip()][-MAX_HISTORY:]
    kept = {"history": history, "chosen": articles, "api_key": api_key}
    try:
        check_chat(request, chat_token, api_key)
        answer = ask(engine, AnswerRequest(question=question, history=history, articles=articles))
    except ValidationError as exc:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in describe(exc.errors()))
        return _page(request, engine, 400, error=detail, draft=question, **kept)
    except InputError as exc:
        return _page(request, engine, 400, error=str(exc), draft=question, **kept)
    except HTTPException as exc:
        error = str(exc.detail)
        return _page(request, engine, exc.status_code, error=error, draft=question, **kept)
    return _page(request, engine, answer=answer, **kept)


@chat_api.post("/answer", response_model=AnswerOut, dependencies=from_this_site)
def chat_answer(request: AnswerRequest, engine: EngineDep, _: ChatKeyName) -> dict:
    """`/api/answer` for the page: only from this site, with its token (or a key)."""
    return ask(engine, request).to_dict()


@chat_api.post(
    "/feedback", status_code=201, response_model=FeedbackOut, dependencies=from_this_site
)
def chat_feedback(request: FeedbackRequest, engine: EngineDep, api_key: ChatKeyName) -> dict:
    """`/api/feedback` for the page: only from this site, with its token (or a key)."""
    return {"id": store_feedback(engine, request, api_key=api_key)}


router.include_router(chat_api)  # after its routes: including copies them
