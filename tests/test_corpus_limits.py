"""Corpus files within limits: linear anchor de-duplication, size caps, staged `rag add`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import article, rag, wait_for_line

from rag.cli import cli
from rag.corpus import list_articles
from rag.embedding import Embedder
from rag.index import build_index, index_is_current
from rag.ingest import _SectionBuilder
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


class CountingSet(set):
    """A set that counts membership tests: the work of de-duplicating anchors."""

    lookups = 0

    def __contains__(self, item: object) -> bool:
        CountingSet.lookups += 1
        return super().__contains__(item)


def anchors(headings: list[str]) -> list[str]:
    builder = _SectionBuilder("Title")
    builder.anchors = CountingSet()
    found = []
    for heading in headings:
        builder._open(2, heading, None)
        found.append(builder.anchor)
    return found


def test_identical_headings_get_the_same_anchors_as_before() -> None:
    assert anchors(["FAQ", "FAQ", "FAQ-2", "FAQ", "Pay"]) == [
        "faq",
        "faq-2",
        "faq-2-2",
        "faq-3",
        "pay",
    ]


def test_anchor_de_duplication_is_linear_in_the_headings() -> None:
    CountingSet.lookups = 0
    found = anchors(["Same"] * 5_000)

    assert found[:3] == ["same", "same-2", "same-3"] and found[-1] == "same-5000"
    assert CountingSet.lookups <= 3 * 5_000  # quadratic was 12.5 million


def invoke(settings: Settings, *args: str, **env: str) -> object:
    options = ["--corpus", str(settings.corpus_dir), "--index", str(settings.index_dir)]
    return CliRunner().invoke(cli, [*args, *options], env=env)


@pytest.fixture()
def built(tiny_settings: Settings, embedder: Embedder) -> Settings:
    (tiny_settings.corpus_dir / "base.md").write_text(article("base", "Testing"))
    build_index(tiny_settings, embedder)
    return tiny_settings


def snapshot(folder: Path) -> dict[str, bytes]:
    """The article files of a corpus folder (a killed run's staging folder is not one)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def many_sections(count: int) -> str:
    body = "".join(f"## Part {n}\n\nPart {n} explains one career step.\n\n" for n in range(count))
    return f"---\ntitle: Long\nurl: https://careers.example/long/\n---\n\n{body}"


@pytest.mark.parametrize(
    ("variable", "content", "message"),
    [
        (
            "RAG_MAX_FILE_BYTES",
            article("big", "Scala") + "More text. " * 200,
            r"big\.md: is 2,[0-9]{3} bytes, over the limit of 1,000 \(RAG_MAX_FILE_BYTES\); split",
        ),
        (
            "RAG_MAX_SECTIONS_PER_FILE",
            many_sections(30),
            r"big\.md: has 30 sections, over the limit of 10 \(RAG_MAX_SECTIONS_PER_FILE\)",
        ),
        (
            "RAG_MAX_PASSAGES_PER_FILE",
            many_sections(30),
            r"big\.md: makes 30 passages, over the limit of 10 \(RAG_MAX_PASSAGES_PER_FILE\)",
        ),
    ],
)
def test_a_file_past_a_limit_is_refused_with_one_line(
    built: Settings, tmp_path: Path, variable: str, content: str, message: str
) -> None:
    (tmp_path / "big.md").write_text(content)
    before, in_use = snapshot(built.corpus_dir), built.index_dir.resolve()
    limit = "1000" if variable == "RAG_MAX_FILE_BYTES" else "10"

    added = invoke(built, "add", str(tmp_path / "big.md"), **{variable: limit})
    (built.corpus_dir / "big.md").write_text(content)
    indexed = invoke(built, "index", "--quiet", **{variable: limit})

    for result in (added, indexed):
        assert result.exit_code == 1, result.output
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("Error: "), result.stderr
    assert re.search(message, added.stderr), added.stderr
    assert re.search(message, indexed.stderr), indexed.stderr
    assert snapshot(built.corpus_dir) == {**before, "big.md": content.encode()}
    assert built.index_dir.resolve() == in_use


def test_rag_add_shows_its_progress(built: Settings, tmp_path: Path) -> None:
    (tmp_path / "new.md").write_text(article("new", "Elixir"))

    result = invoke(built, "add", str(tmp_path / "new.md"))

    assert result.exit_code == 0, result.output
    assert "read 2 files: 2 articles, 4 passages; 6 of 12 texts to embed" in result.stderr
    assert "writing the index" in result.stderr


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_add_leaves_the_corpus_as_it_was(
    built: Settings, tmp_path: Path, kill: signal.Signals
) -> None:
    (tmp_path / "new.md").write_text(article("new", "Elixir"))
    before, in_use = snapshot(built.corpus_dir), built.index_dir.resolve()

    adding = rag(built, "add", str(tmp_path / "new.md"))
    assert adding.stderr is not None
    wait_for_line(adding.stderr, "texts to embed")  # reading done, the model loading
    adding.send_signal(kill)
    assert adding.wait(timeout=120) != 0

    assert snapshot(built.corpus_dir) == before
    assert built.index_dir.resolve() == in_use
    assert index_is_current(built)
    result = invoke(built, "index", "--if-needed")  # what `make run` does next
    assert result.exit_code == 0, result.output
    assert "is up to date" in result.stdout
    assert sorted(p.name for p in built.corpus_dir.iterdir()) == ["base.md"]  # leftovers gone


def test_an_add_killed_after_the_swap_is_finished_by_the_next_build(
    built: Settings, tmp_path: Path
) -> None:
    (tmp_path / "new.md").write_text(article("new", "Elixir"))
    script = (
        "import os, signal, sys\n"
        "import rag.corpus\n"
        "from pathlib import Path\n"
        "from rag.settings import Settings\n"
        "rag.corpus._move_in = lambda folder, staging: os.kill(os.getpid(), signal.SIGKILL)\n"
        "settings = Settings(corpus_dir=Path(sys.argv[1]), index_dir=Path(sys.argv[2]))\n"
        "rag.corpus.add_articles(settings, [Path(sys.argv[3])])\n"
    )
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(built.corpus_dir),
            str(built.index_dir),
            str(tmp_path / "new.md"),
        ],
        cwd=ROOT,
        env={**os.environ},
        timeout=600,
    )
    assert died.returncode == -signal.SIGKILL
    assert sorted(a.slug for a in list_articles(built)) == ["base", "new"]  # swapped in
    assert not (built.corpus_dir / "new.md").exists()  # not yet moved

    result = invoke(built, "index", "--if-needed")

    assert result.exit_code == 0, result.output
    assert "is up to date" in result.stdout
    assert sorted(p.name for p in built.corpus_dir.iterdir()) == ["base.md", "new.md"]
