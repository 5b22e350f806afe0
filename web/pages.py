"""Web pages: the chat, rendered with Jinja2, working with and without JavaScript.

An answer's HTML is made in one place, the partial ``templates/answer.html``:
the page renders it for a form post or a shared link (``/?q=…``), and the
script asks ``/chat/api/answer`` for the same fragment (``Accept: text/html``)
and inserts it, so the two cannot drift apart.

The page asks its own routes under ``/chat/api`` (the same handlers and
models as ``/api``). Who may use them is ``RAG_CHAT`` (`web.auth.check_chat`):
"public" needs the signed token the page embeds, "keys" an API key typed into
the page, "off" serves no chat. Every post here must come from this site
(`web.auth.same_origin`). A shared link (``GET /?q=…``) is answered without a
token in "public" mode, under the chat's per-client limit like every chat
route; in "keys" mode it comes back with the question in the box, to be asked
with a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from pydantic import ValidationError

from rag.analysis import MAX_QUESTION_CHARS
from rag.answering import Answer, Citation
from rag.errors import InputError
from rag.ingest import is_web_link
from web.auth import ChatKeyName, chat_on, check_chat, same_origin
from web.engine import Engine, EngineDep
from web.limits import ANSWERING, CHAT, FEEDBACK
from web.quoting import blocks
from web.schema import MAX_HISTORY, AnswerOut, AnswerRequest, FeedbackOut, FeedbackRequest
from web.service import JSONErrorRoute, ask, describe, store_feedback

TEMPLATES = Path(__file__).parent / "templates"

EXAMPLES = (
    "How much do AI engineers earn?",
    "Which skills does an MLOps engineer need?",
    "Are certifications worth it for a career in AI?",
    "How can a software developer move into machine learning?",
)
# The one wording of the over-long question message; the script fills in the same fields.
TOO_LONG = (
    "Your question is {length} characters long; questions can be at most {limit}. "
    "Please shorten it by {over} characters."
)

# Autoescape everything: questions and passages are shown as text, never as markup.
templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True))
# Every route of the chat counts against the chat's own limit (`web.limits`).
router = APIRouter(include_in_schema=False, dependencies=[Depends(chat_on), CHAT])
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


def copy_text(answer: Answer) -> str:
    """The answer as plain text with its numbered sources, for the copy button.

    >>> c = Citation(1, "p", "A", "S", "https://a.example/#s", "One. Two.", 1.0, ((5, 9),))
    >>> print(copy_text(Answer("q?", True, "Two. [1]", (c,), 1.0)))
    Two. [1]
    <BLANKLINE>
    Sources:
    [1] A › S
        https://a.example/#s
    """
    used = [c for c in answer.citations if c.highlights]
    if not used:
        return answer.answer
    sources = [f"[{c.n}] {c.article} › {c.section}\n    {c.url}" for c in used]
    return "\n".join([answer.answer, "", "Sources:", *sources])


def share_link(question: str, history: list[str], articles: list[str]) -> str:
    """The page's address that answers ``question`` again, in its conversation.

    >>> share_link("and senior ones?", ["What do AI engineers earn?"], [])
    '/?q=and+senior+ones%3F&history=What+do+AI+engineers+earn%3F'
    """
    fields = [("q", question), *(("history", h) for h in history)]
    fields += [("articles", a) for a in articles]
    return "/?" + urlencode(fields)


def too_long(length: int) -> str:
    """The plain-language message for a question over the limit."""
    over = length - MAX_QUESTION_CHARS
    return TOO_LONG.format(length=f"{length:,}", limit=f"{MAX_QUESTION_CHARS:,}", over=f"{over:,}")


def day(published: str | None) -> str:
    """An article's publication day as people write it: ``2025-08-29`` -> ``29 Aug 2025``."""
    if not published:
        return ""
    try:
        when = date.fromisoformat(published[:10])
    except ValueError:
        return published[:10]
    return f"{when.day} {when:%b %Y}"


templates.env.globals.update(
    marked=marked,
    quote_blocks=blocks,
    copy_text=copy_text,
    max_chars=MAX_QUESTION_CHARS,
    too_long_template=TOO_LONG,
    # Only http(s) and relative URLs become links; an index built before ingest refused
    # others (javascript:, data:) shows them as text.
    web_link=is_web_link,
)
templates.env.filters.update(day=day, thousands="{:,}".format)


@dataclass(frozen=True)
class Turn:
    """One answered question of the conversation shown, with the link that answers it again."""

    answer: Answer
    share: str


def _answered(engine: Engine, question: str, history: list[str], articles: list[str]) -> Turn:
    answer = ask(engine, AnswerRequest(question=question, history=history, articles=articles))
    return Turn(answer, share_link(answer.question, history, articles))


def _page(
    request: Request, engine: Engine, status_code: int = 200, **context: object
) -> HTMLResponse:
    # The article picker lists the loaded index's articles (none while it loads).
    articles = engine.index.articles if engine.index is not None else ()
    tokens = request.app.state.chat_tokens
    context = {
        "chat_token": tokens.issue() if tokens is not None else None,
        "ask_key": request.app.state.settings.chat == "keys",
        "api_key": "",
        "examples": EXAMPLES,
        "turns": [],
        "error": None,
        "draft": "",
        "articles": articles,
        "chosen": [],
    } | context
    return templates.TemplateResponse(request, "chat.html", context, status_code=status_code)


def _conversation(
    request: Request,
    engine: Engine,
    question: str,
    history: list[str],
    articles: list[str],
    access: tuple[str, str] | None = None,
) -> HTMLResponse:
    """The page with every turn of the conversation answered, the last one being ``question``.

    The earlier questions come back with the form (or the shared link) and are
    answered again, each after the questions before it, so the whole
    conversation stays on the page without JavaScript. A question that cannot
    be asked stays in the box, whole, with the reason. ``access`` is the form's
    ``(chat_token, api_key)``, checked before anything is answered; a shared link
    has none (see the module's docstring).
    """
    # Browsers send a textarea's line breaks as CRLF; count them as the script does.
    question = question.replace("\r\n", "\n")
    history = [h for h in history if h.strip()][-MAX_HISTORY:]
    turns: list[Turn] = []
    status, error = 200, None
    api_key = access[1] if access else ""
    try:
        if access is not None:
            check_chat(request, *access)
        elif request.app.state.settings.chat == "keys":
            raise HTTPException(401, "type your API key, then ask")
        for n, earlier in enumerate(history):
            turns.append(_answered(engine, earlier, history[:n], articles))
        length = len(question.strip())
        if length > MAX_QUESTION_CHARS:
            raise InputError(too_long(length))
        turns.append(_answered(engine, question, history, articles))
    except ValidationError as exc:
        status = 400
        error = "; ".join(f"{e['field']}: {e['message']}" for e in describe(exc.errors()))
    except InputError as exc:
        status, error = 400, str(exc)
    except HTTPException as exc:
        status, error = exc.status_code, str(exc.detail)
    draft = question if error else ""
    return _page(
        request,
        engine,
        status,
        turns=turns,
        chosen=articles,
        error=error,
        draft=draft,
        api_key=api_key,
    )


# A shared link (GET /?q=…) answers too, so it is queued like the posts.
@router.get("/", response_class=HTMLResponse, dependencies=[ANSWERING])
def chat(
    request: Request,
    engine: EngineDep,
    q: str = "",
    history: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    articles: Annotated[list[str], Query()] = [],  # noqa: B006
) -> HTMLResponse:
    """The empty chat with example questions; a shared link (``/?q=…``) comes answered."""
    if not q.strip():
        return _page(request, engine)
    return _conversation(request, engine, q, history, articles)


@router.post("/", response_class=HTMLResponse, dependencies=[ANSWERING, *from_this_site])
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
    return _conversation(request, engine, question, history, articles, (chat_token, api_key))


@chat_api.post("/answer", response_model=AnswerOut, dependencies=[ANSWERING, *from_this_site])
def chat_answer(
    request: AnswerRequest, engine: EngineDep, http: Request, _: ChatKeyName
) -> Response | dict:
    """`/api/answer` for the page: only from this site, with its token (or a key).

    With ``Accept: text/html`` the reply is the answer's HTML as the page
    shows it (the partial ``answer.html``): the script inserts it as it is.
    """
    answer = ask(engine, request)
    if "text/html" not in http.headers.get("accept", ""):
        return answer.to_dict()
    turn = Turn(answer, share_link(answer.question, request.history, request.articles))
    fragment = templates.get_template("answer.html").render(turn=turn)
    return HTMLResponse(fragment, headers={"Vary": "Accept"})


@chat_api.post(
    "/feedback",
    status_code=201,
    response_model=FeedbackOut,
    dependencies=[FEEDBACK, *from_this_site],
)
def chat_feedback(request: FeedbackRequest, engine: EngineDep, api_key: ChatKeyName) -> dict:
    """`/api/feedback` for the page: only from this site, with its token (or a key)."""
    return {"id": store_feedback(engine, request, api_key=api_key)}


router.include_router(chat_api)  # after its routes: including copies them
