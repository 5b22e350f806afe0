"""Evaluation: score retrieval and answers on a question set (the rules of shared/eval/README)."""

from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rag.answering import Answer, answer_question
from rag.embedding import Embedder
from rag.errors import InputError
from rag.index import Index
from rag.tokens import normalise

_RUNS = re.compile(r"[a-z0-9$%]+")


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str
    answerable: bool
    evidence: tuple[str, ...]
    answer_contains: tuple[str, ...]


@dataclass(frozen=True)
class Scores:
    """The measures of one retriever over a question set."""

    mode: str
    questions: int
    evidence_hit: float
    mrr: float
    answer_hit: float
    false_abstain: float
    abstain_accuracy: float
    p50_ms: float
    p95_ms: float


def match_text(text: str) -> str:
    """Text normalised for matching: entities unescaped, plain quotes and dashes, lower case,
    only runs of letters, digits, ``$`` and ``%`` joined by single spaces."""
    return " ".join(_RUNS.findall(normalise(html.unescape(text))))


def contains_any(text: str, phrases: tuple[str, ...]) -> bool:
    normalised = match_text(text)
    return any(match_text(p) in normalised for p in phrases if match_text(p))


def load_questions(path: Path) -> list[EvalQuestion]:
    """Read a question set, one JSON object a line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            questions.append(
                EvalQuestion(
                    str(row["id"]),
                    str(row["question"]),
                    bool(row["answerable"]),
                    tuple(row.get("evidence", ())),
                    tuple(row.get("answer_contains", ())),
                )
            )
        except (ValueError, KeyError, TypeError):
            raise InputError(
                f"{path}:{number}: not a question object with id, question and answerable"
            ) from None
    if not questions:
        raise InputError(f"{path}: holds no questions")
    return questions


def evaluate(
    index: Index,
    embedder: Embedder,
    questions: list[EvalQuestion],
    *,
    k: int = 5,
    mode: str = "hybrid",
) -> tuple[Scores, list[dict]]:
    """Ask every question once and score the results; also return one row per question."""
    answer_question(index, embedder, "warm-up question about AI salaries", top_k=k, mode=mode)
    rows, latencies = [], []
    hit = reciprocal = answer_hit = false_abstain = declined = 0.0
    answerable = [q for q in questions if q.answerable]
    for q in questions:
        result = answer_question(index, embedder, q.question, top_k=k, mode=mode)
        latencies.append(result.took_ms)
        rank = _evidence_rank(result, q)
        if q.answerable:
            hit += rank is not None
            reciprocal += 1 / rank if rank else 0
            answer_hit += result.answered and contains_any(result.answer, q.answer_contains)
            false_abstain += not result.answered
        else:
            declined += not result.answered
        rows.append(
            {
                "id": q.id,
                "mode": mode,
                "answered": result.answered,
                "evidence_rank": rank,
                "answer": result.answer,
                "took_ms": result.took_ms,
            }
        )
    unanswerable = len(questions) - len(answerable)
    n = max(len(answerable), 1)
    scores = Scores(
        mode=mode,
        questions=len(questions),
        evidence_hit=round(hit / n, 3),
        mrr=round(reciprocal / n, 3),
        answer_hit=round(answer_hit / n, 3),
        false_abstain=round(false_abstain / n, 3),
        abstain_accuracy=round(declined / unanswerable, 3) if unanswerable else 1.0,
        p50_ms=round(float(np.percentile(latencies, 50)), 1),
        p95_ms=round(float(np.percentile(latencies, 95)), 1),
    )
    return scores, rows


def _evidence_rank(result: Answer, question: EvalQuestion) -> int | None:
    """Rank (from 1) of the first cited passage holding an evidence phrase."""
    ranked = sorted(result.citations, key=lambda c: c.n)
    for rank, citation in enumerate(ranked, start=1):
        if contains_any(citation.text, question.evidence):
            return rank
    return None


def scores_table(all_scores: list[Scores]) -> str:
    """A Markdown table of the measures, one row per retriever."""
    head = (
        "| retriever | evidence hit@k | MRR | answer hit | false abstain "
        "| abstain accuracy | p50 ms | p95 ms |"
    )
    lines = [head, "|" + "---|" * 8]
    for s in all_scores:
        lines.append(
            f"| {s.mode} | {s.evidence_hit:.3f} | {s.mrr:.3f} | {s.answer_hit:.3f} | "
            f"{s.false_abstain:.3f} | {s.abstain_accuracy:.3f} | {s.p50_ms:.1f} | {s.p95_ms:.1f} |"
        )
    return "\n".join(lines)


def scores_json(all_scores: list[Scores], rows: list[dict]) -> str:
    return json.dumps({"scores": [asdict(s) for s in all_scores], "questions": rows}, indent=1)
