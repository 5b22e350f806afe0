"""Question analysis: a table of (question, history) -> expected analysis, and the word lists."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest

from rag.analysis import analyse
from rag.errors import InputError
from rag.figures import states, wanted_kind
from rag.index import Index
from rag.tokens import _stemmer, synonym_groups

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "analysis_cases.jsonl").read_text().splitlines()
    if line.strip()
]


@pytest.mark.parametrize("case", CASES, ids=[c["question"] for c in CASES])
def test_analysis_table(corpus_index: Index, case: dict) -> None:
    question = analyse(case["question"], case["history"], corpus_index)
    assert question.wants == case["wants"]
    assert question.follow_up == case["follow_up"]
    if "inherited" in case:
        assert question.inherited == case["inherited"]
    for replaced in case.get("replaced", []):
        assert replaced in question.replaced
        assert replaced not in question.search_text.replace(case["question"], "")
    for name in case.get("names_include", []):
        assert name in question.names
    if "unknown_names" in case:
        assert list(question.unknown_names) == case["unknown_names"]
    if "text" in case:
        assert question.text == case["text"]
    if "focus" in case:
        assert list(question.focus) == case["focus"]
    if "known_text" in case:
        assert question.known_text == case["known_text"]
    if not question.follow_up:
        assert question.search_text == question.text and not question.emphasis


def test_analysis_rejects_empty_and_long_questions(corpus_index: Index) -> None:
    with pytest.raises(InputError, match="empty"):
        analyse("   ", [], corpus_index)
    with pytest.raises(InputError, match="keep it to 1000 characters"):
        analyse("x" * 1001, [], corpus_index)


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("amount", "12 LPA"),
        ("amount", "CHF 150,000"),
        ("amount", "The course is free"),
        ("amount", "€85,000 a year"),
        ("duration", "a decade"),
        ("duration", "2h"),
        ("duration", "4 to 6 years"),
        ("share", "one-fifth of hires"),
        ("share", "85% of projects"),
        ("date", "in March 2025"),
    ],
)
def test_figures_of_every_kind_are_recognised(kind: str, text: str) -> None:
    assert states(kind, text)


@pytest.mark.parametrize(
    ("kind", "text"),
    [("amount", "AI-102"), ("duration", "20% of working hours"), ("share", "most people")],
)
def test_what_is_no_figure_of_a_kind(kind: str, text: str) -> None:
    assert not states(kind, text)


def test_wanted_kinds() -> None:
    assert wanted_kind("how long is the exam") == "duration"
    assert wanted_kind("what's the pass rate") == "share"


def test_no_two_synonym_groups_merge_through_stemming() -> None:
    stems = [set(_stemmer().stemWords(group)) for group in synonym_groups()]
    for (i, a), (j, b) in combinations(enumerate(stems), 2):
        assert not a & b, f"groups {i} and {j} share stems {a & b}"
    # nor does a group join words of other meanings that stem alike
    joined = {s for group in stems for s in group}
    for word in ("positive", "open-source", "validation", "opening", "position"):
        assert _stemmer().stemWord(word) not in joined, word
