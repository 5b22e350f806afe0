"""Web schema: the API's requests and replies as pydantic models, checked as they are read."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)

from rag.answering import MAX_QUESTION_CHARS
from rag.feedback import MAX_ANSWER_CHARS, MAX_COMMENT_CHARS, MAX_FIELD_CHARS, MAX_PASSAGES

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
    generation: str = Field(
        description="The build served: a generation id in the database, or a build folder's name"
    )
    reason: str | None = Field(None, description="Why the index on disk is not the one served")


class Unavailable(BaseModel):
    status: str
    reason: str | None


class Problem(BaseModel):
    """Why a request failed; `errors` names each invalid field when there are several."""

    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list)
