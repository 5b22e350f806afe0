"""Question sets: the JSON-lines files that fit and judge the answer model.

One object a line (see ``shared/eval/README.md``): ``id``, ``question``,
``answerable``, ``evidence``, ``answer_contains``, ``type``, and optionally
``corpus`` (else the name of the set's folder), ``history`` (earlier questions
of a conversation, oldest first) and ``near_miss`` (an unanswerable question
on the articles' topic).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from rag.errors import InputError
from rag.tokens import normalise

_RUNS = re.compile(r"[a-z0-9$%]+")


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str
    answerable: bool
    evidence: tuple[str, ...]
    answer_contains: tuple[str, ...]
    type: str = ""
    corpus: str = ""
    history: tuple[str, ...] = ()
    near_miss: bool = False

    @property
    def follow_up(self) -> bool:
        return bool(self.history)


def match_text(text: str) -> str:
    """Text normalised for matching: entities unescaped, plain quotes and dashes, lower case,
    only runs of letters, digits, ``$`` and ``%`` joined by single spaces."""
    return " ".join(_RUNS.findall(normalise(html.unescape(text))))


def contains_any(text: str, phrases: tuple[str, ...]) -> bool:
    normalised = match_text(text)
    return any(match_text(p) in normalised for p in phrases if match_text(p))


def set_files(paths: list[Path] | tuple[Path, ...]) -> list[Path]:
    """The ``*.jsonl`` files of ``paths`` (files as given, folders searched), sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.rglob("*.jsonl")))
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"{path}: no such question set file or folder")
    if not found:
        raise InputError("no question set (*.jsonl) found in " + ", ".join(map(str, paths)))
    return sorted(dict.fromkeys(found))


def load_questions(path: Path, corpus: str = "") -> list[EvalQuestion]:
    """Read a question set, one JSON object a line; ``corpus`` for lines that name none."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    corpus = corpus or path.parent.name
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            questions.append(
                EvalQuestion(
                    id=str(row["id"]),
                    question=str(row["question"]),
                    answerable=bool(row["answerable"]),
                    evidence=tuple(row.get("evidence", ())),
                    answer_contains=tuple(row.get("answer_contains", ())),
                    type=str(row.get("type", "")),
                    corpus=str(row.get("corpus") or corpus),
                    history=tuple(str(h) for h in row.get("history", ())),
                    near_miss=bool(row.get("near_miss", False)),
                )
            )
        except (ValueError, KeyError, TypeError):
            raise InputError(
                f"{path}:{number}: not a question object with id, question and answerable"
            ) from None
    if not questions:
        raise InputError(f"{path}: holds no questions")
    return questions
