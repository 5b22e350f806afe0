"""Web pages: the chat, rendered with Jinja2, working with and without JavaScript."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from pydantic import ValidationError

from rag.answering import MAX_QUESTION_CHARS, Answer, Citation
from rag.errors import InputError
from web.api import MAX_HISTORY, AnswerRequest, ask, describe
from web.app import WEB_DIR, EngineDep

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
router = APIRouter(include_in_schema=False)


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


templates.env.globals.update(marked=marked, quotes=quotes, max_chars=MAX_QUESTION_CHARS)


def _page(request: Request, status_code: int = 200, **context: object) -> HTMLResponse:
    context = {"examples": EXAMPLES, "history": [], "answer": None, "error": None} | context
    return templates.TemplateResponse(request, "chat.html", context, status_code=status_code)


@router.get("/", response_class=HTMLResponse)
def chat(request: Request) -> HTMLResponse:
    """The empty chat with example questions."""
    return _page(request)


@router.post("/", response_class=HTMLResponse)
def chat_form(
    request: Request,
    engine: EngineDep,
    question: Annotated[str, Form()] = "",
    history: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies form defaults
) -> HTMLResponse:
    """The chat without JavaScript: the form posts here and gets the page back, answered."""
    history = [h for h in history if h.strip()][-MAX_HISTORY:]
    try:
        answer = ask(engine, AnswerRequest(question=question, history=history))
    except ValidationError as exc:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in describe(exc.errors()))
        return _page(request, 400, history=history, error=detail, draft=question)
    except InputError as exc:
        return _page(request, 400, history=history, error=str(exc), draft=question)
    except HTTPException as exc:
        return _page(request, exc.status_code, history=history, error=str(exc.detail))
    return _page(request, history=history, answer=answer)
