"""Evaluation: score retrieval and answers on question sets, in sample or leaving a corpus out.

The measures follow ``shared/eval/README.md``. `evaluate` scores one index
with one answer model; `cross_corpus` fits the model on all corpora but one,
scores the one left out with it, and repeats for each corpus.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from rag.analysis import analyse
from rag.answering import Answer, answer_question
from rag.embedding import Embedder
from rag.fitting import collect, model_from
from rag.index import Index
from rag.questionsets import EvalQuestion, contains_any, load_questions, match_text
from rag.retrieval import question_query, retrieve
from rag.scoring import AnswerModel

__all__ = ["EvalQuestion", "contains_any", "load_questions", "match_text"]

MEASURES = (
    "evidence_hit",
    "mrr",
    "answer_hit",
    "paraphrase_answer_hit",
    "follow_up_answer_hit",
    "false_abstain",
    "abstain_accuracy",
    "near_miss_declined",
    "off_topic_declined",
    "verbatim",
    "quotes_per_answer",
)
TARGETS = {
    "evidence_hit": (">=", 0.90),
    "mrr": (">=", 0.75),
    "answer_hit": (">=", 0.75),
    "paraphrase_answer_hit": (">=", 0.55),
    "follow_up_answer_hit": (">=", 0.80),
    "abstain_accuracy": (">=", 0.85),
    "false_abstain": ("<=", 0.05),
    "verbatim": (">=", 1.0),
}


@dataclass(frozen=True)
class Scores:
    """The measures over one set of questions (``None`` where it holds none of the kind)."""

    name: str
    questions: int
    evidence_hit: float | None
    mrr: float | None
    answer_hit: float | None
    paraphrase_answer_hit: float | None
    follow_up_answer_hit: float | None
    false_abstain: float | None
    abstain_accuracy: float | None
    near_miss_declined: float | None
    off_topic_declined: float | None
    verbatim: float | None
    quotes_per_answer: float | None  # units (sentences, rows, items) an answer quotes
    p50_ms: float | None = None
    p95_ms: float | None = None


def run(
    index: Index,
    embedder: Embedder,
    questions: list[EvalQuestion],
    *,
    k: int = 5,
    mode: str = "hybrid",
    model: AnswerModel | None = None,
) -> list[dict]:
    """Ask every question once; one row of results per question."""
    answer_question(index, embedder, "warm-up question about salaries", top_k=k, model=model)
    rows = []
    for q in questions:
        result = answer_question(
            index, embedder, q.question, top_k=k, history=q.history, mode=mode, model=model
        )
        rank = _evidence_rank(result, q)
        rows.append(
            {
                "id": q.id,
                "corpus": q.corpus,
                "type": q.type,
                "follow_up": q.follow_up,
                "near_miss": q.near_miss,
                "answerable": q.answerable,
                "answered": result.answered,
                "evidence_rank": rank,
                "answer_hit": bool(
                    q.answerable
                    and result.answered
                    and contains_any(result.answer, q.answer_contains)
                ),
                "verbatim": _verbatim(result),
                "units": sum(len(c.highlights) for c in result.citations),
                "probability": result.probability,
                "answer": result.answer,
                "took_ms": result.took_ms,
            }
        )
    return rows


def evaluate(
    index: Index,
    embedder: Embedder,
    questions: list[EvalQuestion],
    *,
    k: int = 5,
    mode: str = "hybrid",
    model: AnswerModel | None = None,
) -> tuple[Scores, list[dict]]:
    """Ask every question once and score the results; also return one row per question."""
    rows = run(index, embedder, questions, k=k, mode=mode, model=model)
    return score(mode, rows), rows


def cross_corpus(
    corpora: dict[str, tuple[Index, list[EvalQuestion]]],
    embedder: Embedder,
    *,
    k: int = 5,
) -> list[dict]:
    """Leave one corpus out: for each corpus, fit on the others and answer its questions."""
    examples = {
        name: collect(index, embedder, qs, top_k=k) for name, (index, qs) in corpora.items()
    }
    rows: list[dict] = []
    for name, (index, questions) in corpora.items():
        training = [e for other, ex in examples.items() if other != name for e in ex]
        model = model_from(training)
        rows.extend(run(index, embedder, questions, k=k, model=model))
    return rows


def follow_up_retrieval(
    corpora: dict[str, tuple[Index, list[EvalQuestion]]],
    embedder: Embedder,
    rows: list[dict],
    *,
    k: int = 5,
) -> tuple[int, float, float]:
    """Evidence hit@k of the answerable follow-ups as answered (``rows``) beside that of
    searching their joined conversation (the earlier questions and the follow-up as one
    question) with the same retriever: how many, as answered, joined."""
    answered = {r["id"]: r["evidence_rank"] is not None for r in rows}
    mine, joined = [], []
    for index, questions in corpora.values():
        for q in questions:
            if not (q.follow_up and q.answerable) or q.id not in answered:
                continue
            together = analyse(" ".join([*q.history, q.question]), (), index)
            vector = embedder.encode_query(together.search_text)
            hits = retrieve(index, question_query(together, vector), k)
            mine.append(answered[q.id])
            joined.append(any(contains_any(h.passage.text, q.evidence) for h in hits))
    if not mine:
        return 0, 0.0, 0.0
    return len(mine), round(float(np.mean(mine)), 3), round(float(np.mean(joined)), 3)


def score(name: str, rows: list[dict]) -> Scores:
    """The measures of a list of question rows (see `run`)."""
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]

    def share(items: list[dict], test: Callable[[dict], bool]) -> float | None:
        return round(sum(map(test, items)) / len(items), 3) if items else None

    answered = [r for r in rows if r["answered"]]
    latencies = [r["took_ms"] for r in rows if "took_ms" in r]
    return Scores(
        name=name,
        questions=len(rows),
        evidence_hit=share(answerable, lambda r: r["evidence_rank"] is not None),
        mrr=share(answerable, lambda r: 1 / r["evidence_rank"] if r["evidence_rank"] else 0),
        answer_hit=share(answerable, lambda r: r["answer_hit"]),
        paraphrase_answer_hit=share(
            [r for r in answerable if r["type"] == "paraphrase"], lambda r: r["answer_hit"]
        ),
        follow_up_answer_hit=share(
            [r for r in answerable if r["follow_up"]], lambda r: r["answer_hit"]
        ),
        false_abstain=share(answerable, lambda r: not r["answered"]),
        abstain_accuracy=share(unanswerable, lambda r: not r["answered"]),
        near_miss_declined=share(
            [r for r in unanswerable if r["near_miss"]], lambda r: not r["answered"]
        ),
        off_topic_declined=share(
            [r for r in unanswerable if not r["near_miss"]], lambda r: not r["answered"]
        ),
        verbatim=share(answered, lambda r: r["verbatim"]),
        quotes_per_answer=round(sum(r["units"] for r in answered) / len(answered), 2)
        if answered
        else None,
        p50_ms=round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        p95_ms=round(float(np.percentile(latencies, 95)), 1) if latencies else None,
    )


def by_corpus(rows: list[dict]) -> list[Scores]:
    """Scores per corpus, then their mean (each corpus weighs the same)."""
    names = list(dict.fromkeys(r["corpus"] for r in rows))
    per = [score(n, [r for r in rows if r["corpus"] == n]) for n in names]
    return [*per, mean_scores(per)] if len(per) > 1 else per


def by_type(rows: list[dict]) -> list[tuple[str, int, float | None]]:
    """Answer hit by question type (and decline rate for unanswerable ones)."""
    kinds: dict[str, list[dict]] = {}
    for r in rows:
        kind = r["type"] or "untyped"
        if not r["answerable"]:
            kind = "near miss" if r["near_miss"] else "off topic"
        kinds.setdefault(kind, []).append(r)
        if r["follow_up"] and r["answerable"]:  # as the follow-up column counts them
            kinds.setdefault("follow-up (answerable, any type)", []).append(r)
    result = []
    for kind, items in sorted(kinds.items()):
        if items[0]["answerable"]:
            value = sum(r["answer_hit"] for r in items) / len(items)
        else:
            value = sum(not r["answered"] for r in items) / len(items)
        result.append((kind, len(items), round(value, 3)))
    return result


def mean_scores(per: list[Scores]) -> Scores:
    values: dict = {}
    for measure in (*MEASURES, "p50_ms", "p95_ms"):
        found = [getattr(s, measure) for s in per if getattr(s, measure) is not None]
        values[measure] = round(sum(found) / len(found), 3) if found else None
    return Scores(name="mean", questions=sum(s.questions for s in per), **values)


def _evidence_rank(result: Answer, question: EvalQuestion) -> int | None:
    """Rank (from 1) of the first cited passage holding an evidence phrase."""
    ranked = sorted(result.citations, key=lambda c: c.n)
    for rank, citation in enumerate(ranked, start=1):
        if contains_any(citation.text, question.evidence):
            return rank
    return None


def _verbatim(result: Answer) -> bool:
    """Whether every quoted span is in its passage and in the answer as shown."""
    return all(
        f"{c.text[start:end]} [{c.n}]" in result.answer
        for c in result.citations
        for start, end in c.highlights
    )


def scores_table(all_scores: list[Scores], *, targets: bool = False) -> str:
    """A Markdown table of the measures, one row per set (with the targets when asked)."""
    head = [
        "set",
        "n",
        "evidence hit@k",
        "MRR",
        "answer hit",
        "paraphrase",
        "follow-up",
        "false abstain",
        "abstain acc.",
        "near miss",
        "off topic",
        "verbatim",
        "quotes/answer",
        "p50 ms",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = list(all_scores)
    for s in rows:
        cells = [s.name, str(s.questions)]
        cells += [_cell(getattr(s, m)) for m in MEASURES]
        cells.append(_cell(s.p50_ms, 1))
        lines.append("| " + " | ".join(cells) + " |")
    if targets:
        cells = ["target", ""]
        for m in MEASURES:
            op, value = TARGETS.get(m, ("", None))
            cells.append(f"{op} {value:.2f}" if value is not None else "")
        cells.append("≤ 10")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def types_table(rows: list[dict]) -> str:
    lines = ["| question type | n | answer hit (declined, for unanswerable) |", "|---|---|---|"]
    lines += [f"| {kind} | {n} | {value:.3f} |" for kind, n, value in by_type(rows)]
    return "\n".join(lines)


def scores_json(all_scores: list[Scores], rows: list[dict]) -> str:
    return json.dumps({"scores": [asdict(s) for s in all_scores], "questions": rows}, indent=1)


def _cell(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
