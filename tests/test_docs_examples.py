"""The examples of README.md and docs/integrating.md, run as written against a live server.

Each curl and Python example is taken from the Markdown, pointed at the
test's uvicorn (only ``http://127.0.0.1:8000`` is replaced by its address)
and run; its output is checked. The pasted terminal session at the end of
docs/integrating.md is a record of a real run, not an example to rerun.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from rag.index import Index
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = "http://127.0.0.1:8000"
ARTICLE = "Career as an AI Engineer: A Comprehensive Report"
CITATION_LINE = re.compile(r"^\d+ .+ › .+ https://\S+$")


@dataclass(frozen=True)
class Example:
    section: str  # the heading above it
    language: str
    code: str


def examples(path: Path) -> list[Example]:
    """The fenced code blocks of ``path`` with the heading each one is under."""
    found, section = [], ""
    tokens = MarkdownIt().parse(path.read_text(encoding="utf-8"))
    for n, token in enumerate(tokens):
        if token.type == "heading_open":
            section = tokens[n + 1].content
        elif token.type == "fence":
            found.append(Example(section, token.info.strip(), token.content))
    return found


def console_script(example: Example) -> str:
    """A ``console`` block's commands as a shell script (its lines without the ``$ `` prompt)."""
    lines = example.code.splitlines()
    assert lines[0].startswith("$ "), f"{example.section}: a console example starts with $"
    return "\n".join(line.removeprefix("$ ") for line in lines)


@pytest.fixture(scope="module")
def settings(
    corpus_settings: Settings, corpus_index: Index, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The session's real index with this module's own data folder (keys start off)."""
    return corpus_settings.with_(data_dir=tmp_path_factory.mktemp("docs-examples") / "data")


@pytest.fixture(scope="module")
def base_url(
    settings: Settings, serve: Callable[[Settings], AbstractContextManager[str]]
) -> Iterator[str]:
    with serve(settings) as url:
        yield url


def run(code: str, base_url: str, settings: Settings, shell: bool, key: str = "") -> str:
    """Run an example pointed at ``base_url``; its standard output (fails on a non-zero exit)."""
    env = os.environ | {
        "RAG_CORPUS_DIR": str(settings.corpus_dir),
        "RAG_INDEX_DIR": str(settings.index_dir),
        "RAG_DATA_DIR": str(settings.data_dir),
    }
    env.pop("RAG_KEY", None)
    if key:
        env["RAG_KEY"] = key
    code = code.replace(DOCUMENTED, base_url)
    if shell:
        # `rag` as the docs say to run it after set-up: the virtualenv's command.
        rag = f'rag() {{ "{sys.executable}" -m rag.cli "$@"; }}\nset -e\n'
        command = ["bash", "-c", rag + code]
    else:
        command = [sys.executable, "-c", code]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def answered(output: str) -> dict:
    reply = json.loads(output)
    assert reply["answered"] is True, reply
    assert reply["citations"], reply
    return reply


def test_readme_examples_run_as_written(base_url: str, settings: Settings) -> None:
    readme = examples(ROOT / "README.md")
    curls = [e for e in readme if e.language == "sh" and e.code.startswith("curl ")]
    pythons = [e for e in readme if e.language == "python"]
    assert len(curls) == 1 and len(pythons) == 1
    reply = answered(run(curls[0].code, base_url, settings, shell=True))
    assert reply["question"] == "What does an MLOps engineer do?"
    assert len(reply["citations"]) == 3  # "top_k": 3

    lines = run(pythons[0].code, base_url, settings, shell=False).splitlines()
    assert lines, "the Python example printed nothing"
    assert all(CITATION_LINE.match(line) for line in lines), lines
    # The slug filter names a real article: every citation comes from it.
    assert all(f" {ARTICLE} › " in line for line in lines), lines


def test_integrating_guide_examples_run_as_written(base_url: str, settings: Settings) -> None:
    guide = [e for e in examples(ROOT / "docs" / "integrating.md")]
    session = [e for e in guide if e.section == "A session from start to finish"]
    assert len(session) == 1  # a pasted record, left out
    runnable = [e for e in guide if e not in session]
    asking = [e for e in runnable if e.section == "Asking"]
    curl, python, keyed_curl = (
        next(e for e in asking if e.language == "console" and "Authorization" not in e.code),
        next(e for e in asking if e.language == "python"),
        next(e for e in asking if e.language == "console" and "Authorization" in e.code),
    )
    feedback = next(e for e in runnable if e.section == "Sending feedback")
    keys = next(e for e in runnable if e.section == "API keys" and e.language == "console")

    reply = answered(run(console_script(curl), base_url, settings, shell=True))
    assert len(reply["citations"]) == 3

    # Keys off: the Python example sends no key; with the feedback example after it.
    output = run(python.code + feedback.code, base_url, settings, shell=False).splitlines()
    quoted, *citations, stored = output
    assert quoted and not CITATION_LINE.match(quoted)
    assert citations and all(f" {ARTICLE} › " in line for line in citations), citations
    assert re.fullmatch(r"\{'id': \d+\}", stored), stored

    # The keys example, then the keyed examples with the key it printed.
    create = "\n".join(line for line in console_script(keys).splitlines() if "create" in line)
    key = run(create, base_url, settings, shell=True).strip()
    assert key.startswith("rag_"), key
    answered(run(console_script(keyed_curl), base_url, settings, shell=True, key=key))
    lines = run(python.code, base_url, settings, shell=False, key=key).splitlines()
    assert all(f" {ARTICLE} › " in line for line in lines[1:]) and len(lines) > 1
    unkeyed = run(console_script(curl), base_url, settings, shell=True)
    assert json.loads(unkeyed)["detail"].startswith("this API needs a key"), unkeyed
    listed = run(
        "\n".join(line for line in console_script(keys).splitlines() if " list" in line),
        base_url,
        settings,
        shell=True,
    )
    assert "mobile-app" in listed
