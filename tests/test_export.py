"""Feedback export to CSV: every field quoted, formulas defused, one record per feedback."""

from __future__ import annotations

import csv
import io

import pytest

from rag.feedback import Feedback, export_feedback, record_feedback
from rag.settings import Settings


def _csv(settings: Settings) -> str:
    out = io.StringIO()
    export_feedback(settings, "csv", out)
    return out.getvalue()


def _record(settings: Settings, comment: str = "", answer: str = "A lot. [1]") -> None:
    question = "What do AI engineers earn?"
    record_feedback(settings, Feedback(question, answer, ("p1",), True, comment))


def test_a_lone_carriage_return_stays_inside_its_quoted_field(tiny_settings: Settings) -> None:
    comment = "fine\r=cmd|' /C calc'!A0"
    _record(tiny_settings, comment)

    # newline="": the reader sees line endings as a spreadsheet does, a lone CR included.
    rows = list(csv.reader(io.StringIO(_csv(tiny_settings), newline="")))

    assert len(rows) == 2, rows
    assert rows[1][5] == comment


def test_every_field_is_quoted(tiny_settings: Settings) -> None:
    _record(tiny_settings, "plain")

    header, record = _csv(tiny_settings).splitlines()

    assert header.startswith('"id","created_at","helpful","question"')
    assert record.startswith('"1","')
    assert record.endswith('"plain","p1","(unknown)","(unknown)",""')


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_text_a_spreadsheet_would_run_is_defused(tiny_settings: Settings, lead: str) -> None:
    # The answer is stored as sent (a comment is trimmed), so it can start with a tab or CR.
    _record(tiny_settings, answer=f"{lead}cmd|' /C calc'!A0")

    rows = list(csv.reader(io.StringIO(_csv(tiny_settings), newline="")))

    assert rows[1][4] == f"'{lead}cmd|' /C calc'!A0"
